"""The Triton GEMV (decode-batch linear layers) against ``F.linear`` and SiLU-and-mul.

Without CUDA it runs under the Triton interpreter at small float16 shapes (the interpreter's
tl.dot multiplies raw bits for bfloat16); tests marked ``cuda`` repeat it at the Llama-3.1-8B
shapes in bfloat16 and float16 and check that the linear layers and the MLP use it."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ["TRITON_INTERPRET"] = "1"  # must precede the first `import triton`

pytest.importorskip("triton")

from pagoda.kernels import triton_gemv  # noqa: E402
from pagoda.kernels.activation_ref import silu_and_mul  # noqa: E402

DEVICE = "cuda" if HAS_CUDA else "cpu"
cuda = pytest.mark.cuda
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")


def _inputs(m, n, k, dtype, bias, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=gen).to(DEVICE, dtype)
    w = (torch.randn(n, k, generator=gen) / k**0.5).to(DEVICE, dtype)
    b = torch.randn(n, generator=gen).to(DEVICE, dtype) if bias else None
    return x, w, b


def _reference(x, w, b):
    """F.linear in float32, rounded once to the input dtype."""
    f = F.linear(x.float(), w.float(), None if b is None else b.float())
    return f.to(x.dtype)


TOL = {torch.float16: dict(atol=2e-3, rtol=4e-3), torch.bfloat16: dict(atol=2e-2, rtol=3e-2)}


def _check(m, n, k, dtype, bias, seed):
    """Within two units in the last place of the reference (rounded once from float32)."""
    x, w, b = _inputs(m, n, k, dtype, bias, seed)
    torch.testing.assert_close(triton_gemv.gemv(x, w, b), _reference(x, w, b), **TOL[dtype])
    w2 = torch.cat([w, w.flip(0)])
    b2 = None if b is None else torch.cat([b, b.flip(0)])
    expected = silu_and_mul(_reference(x, w2, b2))
    torch.testing.assert_close(triton_gemv.gemv_silu_and_mul(x, w2, b2), expected, **TOL[dtype])


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize(
    "m,n,k", [(1, 40, 64), (3, 96, 192), (8, 33, 256), (20, 64, 128), (70, 48, 128)]
)
def test_gemv_matches_linear(m, n, k, bias):
    """Row counts 1..70 (the fused gate-up's tiles change past 16 rows), N not a multiple of
    the tile (masked), K not a multiple of 128."""
    _check(m, n, k, torch.float16, bias, seed=m + n)


@cuda
def test_supports_only_small_half_precision_cuda_inputs():
    w = torch.zeros(64, 128, dtype=torch.bfloat16)
    assert not triton_gemv.supports(torch.zeros(1, 128, dtype=torch.bfloat16), w)  # CPU
    if HAS_CUDA:
        wc = w.cuda()
        rows = triton_gemv.MAX_ROWS
        assert triton_gemv.supports(torch.zeros(rows, 128, dtype=torch.bfloat16, device="cuda"), wc)
        assert not triton_gemv.supports(
            torch.zeros(rows + 1, 128, dtype=torch.bfloat16, device="cuda"), wc
        )
        assert triton_gemv.supports(
            torch.zeros(rows + 1, 128, dtype=torch.bfloat16, device="cuda"), wc, rows + 1
        )
        assert not triton_gemv.supports(torch.zeros(1, 128, device="cuda"), wc.float())
        odd = torch.zeros(64, 96, dtype=torch.bfloat16, device="cuda")
        assert not triton_gemv.supports(
            torch.zeros(1, 96, dtype=torch.bfloat16, device="cuda"), odd
        )


@cuda
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m", [1, 2, 5, 8, 11, 16])
@pytest.mark.parametrize("n,k", [(6144, 4096), (4096, 4096), (4096, 14336), (1000, 4096)])
def test_gemv_matches_linear_cuda(n, k, m, dtype):
    _check(m, n, k, dtype, bias=n == 1000, seed=n + m)


@cuda
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m", [17, 24, 32, 48, 64, 100, 128])
@pytest.mark.parametrize("n,k", [(28672, 4096), (6144, 1024)])
def test_gemv_silu_and_mul_past_16_rows_cuda(n, k, m, dtype):
    """The fused gate-up takes up to SILU_AND_MUL_MAX_ROWS rows (Llama-3.1-8B and Qwen3-0.6B
    shapes; the tiles change at 32, 64 and 128 rows)."""
    x, w, _ = _inputs(m, n, k, dtype, False, seed=n + m)
    expected = silu_and_mul(_reference(x, w, None))
    torch.testing.assert_close(triton_gemv.gemv_silu_and_mul(x, w), expected, **TOL[dtype])


@cuda
@needs_cuda
def test_linear_layer_and_mlp_use_gemv_cuda(monkeypatch):
    from pagoda.layers.activation import SiluAndMul
    from pagoda.layers.linear import MergedColumnParallelLinear

    layer = MergedColumnParallelLinear(256, [512, 512], False, torch.bfloat16).cuda()
    layer.weight.data.normal_(0, 0.05)
    layer.linear_method.process_weights_after_loading(layer)
    calls = []
    for name in ("gemv", "gemv_silu_and_mul"):
        real = getattr(triton_gemv, name)
        monkeypatch.setattr(
            triton_gemv,
            name,
            lambda *a, _real=real, _n=name, **kw: calls.append(_n) or _real(*a, **kw),
        )
    x = torch.randn(3, 256, device="cuda", dtype=torch.bfloat16)
    torch.testing.assert_close(layer(x), _reference(x, layer.weight, None), atol=3e-2, rtol=0)
    fused = SiluAndMul().of_projection(layer, x)
    torch.testing.assert_close(fused, silu_and_mul(layer(x)), atol=3e-2, rtol=0)
    assert calls == ["gemv", "gemv_silu_and_mul", "gemv"]
    big = torch.randn(triton_gemv.MAX_ROWS + 1, 256, device="cuda", dtype=torch.bfloat16)
    layer(big)
    assert calls == ["gemv", "gemv_silu_and_mul", "gemv"]
    SiluAndMul().of_projection(layer, big)
    assert calls[3:] == ["gemv_silu_and_mul"]
    bigger = torch.randn(triton_gemv.SILU_AND_MUL_MAX_ROWS + 1, 256, device="cuda")
    SiluAndMul().of_projection(layer, bigger.to(torch.bfloat16))
    assert calls[3:] == ["gemv_silu_and_mul"]


# (rows, outputs written, K, fused with SiLU): Llama-3.1-8B and Qwen3-0.6B decode batches
_CONFIG_CASES = [
    (block_m, n, k, fused)
    for block_m in (16, 32, 64, 128)
    for n, k, fused in (
        (6144, 4096, False),
        (4096, 14336, False),
        (128256, 4096, False),
        (14336, 4096, True),
        (3072, 1024, True),
    )
    if fused or block_m == 16
]


@pytest.mark.parametrize("shared_bytes", [211 * 1024, 83 * 1024])
def test_gemv_tiles_fit_the_shared_memory(shared_bytes) -> None:
    """Every tile config's stages fit in the device's shared memory (H100: 227 KiB; Ada and
    consumer Ampere: 99 KiB; each less the 16 KiB reserve), with at least two stages."""
    for block_m, n, k, fused in _CONFIG_CASES:
        block_n, block_k, _, stages = triton_gemv._config(block_m, n, k, fused, shared_bytes)
        tile_bytes = (block_m + block_n * (2 if fused else 1)) * block_k * 2
        assert stages >= 2 and stages * tile_bytes <= shared_bytes, (block_m, n, k, fused)
        assert k % block_k == 0


def test_gemv_tiles_on_h100_are_the_swept_ones() -> None:
    """The fused gate-up's tiles past 16 rows (benchmarks/gemv_sweep.py --silu-rows, H100)."""
    h100 = 227 * 1024 - triton_gemv._SHARED_MEMORY_RESERVE
    assert triton_gemv._config(32, 14336, 4096, True, h100) == (64, 128, 4, 4)
    assert triton_gemv._config(128, 14336, 4096, True, h100) == (64, 128, 8, 3)
    assert triton_gemv._config(32, 3072, 1024, True, h100) == (32, 256, 4, 4)
    assert triton_gemv._config(64, 3072, 1024, True, h100) == (32, 128, 4, 4)


def test_prefetch_columns_spread_the_budget_over_the_starting_programs(monkeypatch) -> None:
    """Launched with PDL, each program prefetches a power-of-two count of leading weight
    columns (whole 128-byte lines) so that the programs placed at once (two per SM) ask for
    at most PREFETCH_BYTES in all; at 132 SMs, the Llama-3.1-8B shapes:"""
    monkeypatch.setattr(triton_gemv, "sm_count", lambda device: 132)
    cols = triton_gemv._prefetch_cols
    dev = torch.device("cuda")
    assert cols(192, 32, 4096, dev) == 1024  # qkv: 192 programs of 32 rows
    assert cols(128, 32, 14336, dev) == 1024  # down
    assert cols(448, 64, 4096, dev) == 256  # gate-up with SiLU: 32 gate + 32 up rows each
    assert cols(4008, 32, 4096, dev) == 512  # LM head
    assert cols(4, 32, 128, dev) == 128  # never past K
    for programs, rows, k in ((192, 32, 4096), (4008, 32, 4096), (4, 32, 128)):
        c = cols(programs, rows, k, dev)
        assert c & (c - 1) == 0
        assert min(programs, 264) * rows * c * 2 <= triton_gemv.PREFETCH_BYTES
    monkeypatch.setattr(triton_gemv, "PREFETCH_BYTES", 0)
    assert cols(192, 32, 4096, dev) == 0
