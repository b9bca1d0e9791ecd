"""Triton kernels against their pure-torch references on fresh random inputs at ragged shapes.

Without CUDA the kernels run under the Triton interpreter (``TRITON_INTERPRET=1``, set here
before triton is imported) on the CPU at tiny shapes; tests marked ``cuda`` repeat them at real
shapes on a GPU and are skipped elsewhere."""

from __future__ import annotations

import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ["TRITON_INTERPRET"] = "1"  # must precede the first `import triton`

triton = pytest.importorskip("triton")

from pagoda.kernels import activation_ref, norm_ref, rotary_ref  # noqa: E402
from pagoda.kernels import triton_attention as ta  # noqa: E402
from pagoda.kernels import triton_ops as to  # noqa: E402

DEVICE = "cuda" if HAS_CUDA else "cpu"
cuda = pytest.mark.cuda
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")

TOL = {
    torch.float32: dict(atol=2e-4, rtol=2e-4),
    torch.float16: dict(atol=2e-3, rtol=2e-3),
    torch.bfloat16: dict(atol=2e-2, rtol=2e-2),
}
EXACT = dict(atol=0, rtol=0)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape, gen, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=gen).to(dtype=dtype, device=DEVICE)


def _paged_cache(lengths, block_size, kv_heads, dim, dtype, seed):
    """A random cache whose blocks are handed out shuffled; returns (cache, block_tables int32)."""
    gen = _gen(seed)
    blocks = [-(-n // block_size) for n in lengths]
    num_blocks = sum(blocks) + 3
    perm = torch.randperm(num_blocks, generator=gen).tolist()
    cache = _randn(2, num_blocks, block_size, kv_heads, dim, gen=gen, dtype=dtype)
    width, tables, used = max(blocks), [], 0
    for nb in blocks:
        tables.append(perm[used : used + nb] + [0] * (width - nb))
        used += nb
    return cache, torch.tensor(tables, dtype=torch.int32, device=DEVICE)


# ---------------------------------------------------------------------------------------------
# write_kv


def _check_write_kv(num_tokens, kv_heads, dim, block_size, dtype, seed):
    gen = _gen(seed)
    num_blocks = -(-num_tokens // block_size) + 2
    cache = _randn(2, num_blocks, block_size, kv_heads, dim, gen=gen, dtype=dtype)
    expected = cache.clone()
    # k and v as strided views of one fused projection output, as a model produces them.
    qkv = _randn(num_tokens, 3 * kv_heads * dim, gen=gen, dtype=dtype)
    k = qkv[:, kv_heads * dim : 2 * kv_heads * dim].view(num_tokens, kv_heads, dim)
    v = qkv[:, 2 * kv_heads * dim :].view(num_tokens, kv_heads, dim)
    slots = torch.randperm(num_blocks * block_size, generator=gen)[:num_tokens].to(DEVICE)
    ta.write_kv_ref(expected, k, v, slots)
    ta.write_kv(cache, k, v, slots)
    torch.testing.assert_close(cache, expected, atol=0, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("num_tokens,kv_heads,dim", [(1, 1, 32), (17, 2, 64), (33, 3, 48)])
def test_write_kv_matches_reference(num_tokens, kv_heads, dim, dtype):
    _check_write_kv(num_tokens, kv_heads, dim, 16, dtype, seed=num_tokens)


def test_write_kv_skips_negative_slots():
    gen = _gen(0)
    cache = _randn(2, 2, 16, 2, 32, gen=gen)
    before = cache.clone()
    k, v = _randn(3, 2, 32, gen=gen), _randn(3, 2, 32, gen=gen)
    slots = torch.tensor([5, -1, 20], device=DEVICE)
    ta.write_kv(cache, k, v, slots)
    ta.write_kv_ref(before, k[[0, 2]], v[[0, 2]], slots[[0, 2]])
    torch.testing.assert_close(cache, before, atol=0, rtol=0)


@cuda
@needs_cuda
def test_write_kv_matches_reference_cuda():
    _check_write_kv(3000, 8, 128, 16, torch.bfloat16, seed=1)


# ---------------------------------------------------------------------------------------------
# Decode


def _check_decode(
    lengths, heads, kv_heads, dim, block_size, dtype, num_splits, seed, min_chunk=None
):
    cache, tables = _paged_cache(lengths, block_size, kv_heads, dim, dtype, seed)
    q = _randn(len(lengths), heads, dim, gen=_gen(seed + 1), dtype=dtype)
    seq_lens = torch.tensor(lengths, dtype=torch.int32, device=DEVICE)
    scale = dim**-0.5
    expected = ta.paged_decode_attention_ref(q, cache, tables, seq_lens, scale)
    out = ta.paged_decode_attention(
        q, cache, tables, seq_lens, scale, num_splits=num_splits, min_chunk=min_chunk
    )
    assert out.dtype == dtype and out.shape == q.shape
    torch.testing.assert_close(out, expected, **TOL[dtype])


@pytest.mark.parametrize("num_splits", [1, 3])
@pytest.mark.parametrize("heads,kv_heads", [(2, 2), (8, 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decode_matches_reference(heads, kv_heads, dtype, num_splits):
    _check_decode([1, 5, 17, 33], heads, kv_heads, 32, 16, dtype, num_splits, seed=heads)


def test_decode_min_chunk_splits_only_long_contexts():
    # Spans of at least 48 tokens: 1-48 tokens read in one span (the other splits are empty),
    # 49-96 in two, longer contexts in up to four (the most allowed) spans of whole tiles.
    _check_decode([1, 48, 49, 100, 170], 8, 2, 32, 16, torch.float32, 4, seed=5, min_chunk=48)


@pytest.mark.parametrize(
    "num_reqs,plan", [(1, (32, 0)), (4, (16, 0)), (8, (8, 256)), (32, (8, 256)), (33, (1, 0))]
)
def test_decode_split_plan_on_132_sms(monkeypatch, num_reqs, plan):
    monkeypatch.setattr(ta, "sm_count", lambda device: 132)
    assert ta.decode_split_plan(num_reqs, 8, torch.device("cuda")) == plan


@pytest.mark.parametrize("dim,block_size,dtype", [(64, 32, torch.float16), (48, 16, torch.float32)])
def test_decode_head_dims_and_block_sizes(dim, block_size, dtype):
    _check_decode([33, 2, 70], 4, 1, dim, block_size, dtype, num_splits=2, seed=dim)


@cuda
@needs_cuda
@pytest.mark.parametrize("num_splits", [None, 1, 8])
@pytest.mark.parametrize("dim", [64, 128])
@pytest.mark.parametrize("heads,kv_heads", [(32, 8), (16, 16)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_decode_matches_reference_cuda(heads, kv_heads, dim, dtype, num_splits):
    lengths = [1, 17, 300, 1000, 4096, 33, 129, 2000]
    _check_decode(lengths, heads, kv_heads, dim, 16, dtype, num_splits, seed=dim)


@cuda
@needs_cuda
@pytest.mark.parametrize("block_size", [32, 64, 128])
def test_decode_block_sizes_cuda(block_size):
    _check_decode([1, 100, 777, 3000], 32, 8, 128, block_size, torch.bfloat16, None, seed=3)


# ---------------------------------------------------------------------------------------------
# Prefill


def _check_prefill(lengths, chunks, heads, kv_heads, dim, block_size, dtype, seed):
    """Request i's query chunk is its last ``chunks[i]`` tokens; its K/V are in the cache."""
    cache, tables = _paged_cache(lengths, block_size, kv_heads, dim, dtype, seed)
    gen = _gen(seed + 1)
    q = _randn(sum(chunks), heads, dim, gen=gen, dtype=dtype)
    qsl = [0]
    for c in chunks:
        qsl.append(qsl[-1] + c)
    # The chunk's own K/V (the reference takes them from k, v; the kernel from the cache).
    k = torch.cat([ta.gather_slots(tables[i : i + 1], block_size, n)[0, n - c :]
                   for i, (n, c) in enumerate(zip(lengths, chunks, strict=True))])  # fmt: skip
    flat = cache.view(2, -1, kv_heads, dim)
    kk, vv = flat[0][k], flat[1][k]
    scale = dim**-0.5
    expected = ta.prefill_attention_ref(q, kk, vv, cache, qsl, lengths, tables, scale)
    qsl_t = torch.tensor(qsl, dtype=torch.int32, device=DEVICE)
    lens_t = torch.tensor(lengths, dtype=torch.int32, device=DEVICE)
    out = ta.prefill_attention(
        q, kk, vv, cache, qsl_t, lens_t, tables, scale, max_query_len=max(chunks)
    )
    torch.testing.assert_close(out, expected, **TOL[dtype])


@pytest.mark.parametrize("heads,kv_heads", [(2, 2), (4, 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prefill_matches_reference(heads, kv_heads, dtype):
    # Whole prompts (1, 17), chunks after a cached prefix (5 of 33, 20 of 40), a decode-like 1.
    lengths, chunks = [1, 33, 17, 40, 9], [1, 5, 17, 20, 1]
    _check_prefill(lengths, chunks, heads, kv_heads, 32, 16, dtype, seed=heads)


def test_prefill_head_dim_64_fp16_block_32():
    _check_prefill([36, 20], [36, 7], 2, 1, 64, 32, torch.float16, seed=5)


@cuda
@needs_cuda
@pytest.mark.parametrize("dim", [64, 128])
@pytest.mark.parametrize("heads,kv_heads", [(32, 8), (16, 16)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_prefill_matches_reference_cuda(heads, kv_heads, dim, dtype):
    lengths = [1, 513, 2048, 1000, 77, 4000]
    chunks = [1, 513, 2048, 333, 1, 1500]
    _check_prefill(lengths, chunks, heads, kv_heads, dim, 16, dtype, seed=dim)


# ---------------------------------------------------------------------------------------------
# RMSNorm, rotary, SiLU-and-mul


@pytest.mark.parametrize("rows,hidden", [(1, 64), (7, 96)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_matches_reference(rows, hidden, dtype):
    gen = _gen(rows)
    x, res = _randn(rows, hidden, gen=gen, dtype=dtype), _randn(rows, hidden, gen=gen, dtype=dtype)
    w = _randn(hidden, gen=gen, dtype=dtype)
    torch.testing.assert_close(to.rms_norm(x, w, 1e-6), norm_ref.rms_norm(x, w, 1e-6), **TOL[dtype])
    normed, total = to.fused_add_rms_norm(x, res, w, 1e-5)
    ref_normed, ref_total = norm_ref.fused_add_rms_norm(x, res, w, 1e-5)
    # Exact on a GPU; the interpreter rounds float32 -> bfloat16 toward zero (one ulp off).
    torch.testing.assert_close(total, ref_total, **(EXACT if HAS_CUDA else TOL[dtype]))
    torch.testing.assert_close(normed, ref_normed, **TOL[dtype])


def _check_rotary(tokens, heads, kv_heads, dim, rotary_dim, dtype, inplace, seed):
    gen = _gen(seed)
    qkv = _randn(tokens, (heads + 2 * kv_heads) * dim, gen=gen, dtype=dtype)
    q = qkv[:, : heads * dim].view(tokens, heads, dim)
    k = qkv[:, heads * dim : (heads + kv_heads) * dim].view(tokens, kv_heads, dim)
    max_pos = 4096
    inv = 1.0 / 10000 ** (torch.arange(0, rotary_dim, 2).float() / rotary_dim)
    freqs = torch.outer(torch.arange(max_pos).float(), inv)
    cos, sin = freqs.cos().to(DEVICE), freqs.sin().to(DEVICE)
    pos = torch.randint(0, max_pos, (tokens,), generator=gen).to(DEVICE)
    eq, ek = rotary_ref.rotary_embedding(pos, q.clone(), k.clone(), cos, sin)
    rq, rk = to.rotary_embedding(pos, q, k, cos, sin, inplace=inplace)
    if inplace:
        assert rq.data_ptr() == q.data_ptr() and rk.data_ptr() == k.data_ptr()
    torch.testing.assert_close(rq, eq, **TOL[dtype])
    torch.testing.assert_close(rk, ek, **TOL[dtype])


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("rotary_dim", [32, 16])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rotary_matches_reference(rotary_dim, dtype, inplace):
    _check_rotary(5, 4, 2, 32, rotary_dim, dtype, inplace, seed=rotary_dim)


def test_rotary_reference_matches_layer_in_float32():
    from pagoda.layers.rotary import RotaryEmbedding

    rope = RotaryEmbedding(32, 512, {"rope_type": "default", "rope_theta": 10000.0})
    gen = _gen(0)
    q, k = torch.randn(6, 4, 32, generator=gen), torch.randn(6, 2, 32, generator=gen)
    pos = torch.tensor([0, 1, 7, 100, 511, 3])
    eq, ek = rope(pos, q, k)
    rq, rk = rotary_ref.rotary_embedding(pos, q, k, rope.cos_cache, rope.sin_cache)
    torch.testing.assert_close(rq, eq)
    torch.testing.assert_close(rk, ek)


@pytest.mark.parametrize("shape", [(1, 64), (2, 3, 100)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_silu_and_mul_matches_reference(shape, dtype):
    x = _randn(*shape, gen=_gen(len(shape)), dtype=dtype)
    torch.testing.assert_close(to.silu_and_mul(x), activation_ref.silu_and_mul(x), **TOL[dtype])


@cuda
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_elementwise_ops_cuda(dtype):
    gen = _gen(9)
    x, res = _randn(513, 4096, gen=gen, dtype=dtype), _randn(513, 4096, gen=gen, dtype=dtype)
    w = _randn(4096, gen=gen, dtype=dtype)
    torch.testing.assert_close(to.rms_norm(x, w, 1e-6), norm_ref.rms_norm(x, w, 1e-6), **TOL[dtype])
    normed, total = to.fused_add_rms_norm(x, res, w, 1e-6)
    ref_normed, ref_total = norm_ref.fused_add_rms_norm(x, res, w, 1e-6)
    torch.testing.assert_close(total, ref_total, atol=0, rtol=0)
    torch.testing.assert_close(normed, ref_normed, **TOL[dtype])
    gate_up = _randn(513, 2 * 14336, gen=gen, dtype=dtype)
    torch.testing.assert_close(
        to.silu_and_mul(gate_up), activation_ref.silu_and_mul(gate_up), **TOL[dtype]
    )
    for inplace in (False, True):
        _check_rotary(777, 32, 8, 128, 128, dtype, inplace, seed=1)
        _check_rotary(77, 16, 16, 64, 32, dtype, inplace, seed=2)


# ---------------------------------------------------------------------------------------------
# The backend: a mixed step (decodes first, then prefill chunks) against the torch backend


def _check_backend(decode_lens, prefill_lens, chunks, heads, kv_heads, dim, block_size, dtype):
    from pagoda.layers.attention_metadata import AttentionMetadata
    from pagoda.plugins.attention.torch_backend import TorchAttentionBackend
    from pagoda.plugins.attention.triton_backend import TritonAttentionBackend

    lengths = decode_lens + prefill_lens
    n_new = [1] * len(decode_lens) + chunks
    cache, tables = _paged_cache(lengths, block_size, kv_heads, dim, dtype, seed=dim)
    gen = _gen(7)
    tokens = sum(n_new)
    q = _randn(tokens, heads, dim, gen=gen, dtype=dtype)
    k, v = (
        _randn(tokens, kv_heads, dim, gen=gen, dtype=dtype),
        _randn(tokens, kv_heads, dim, gen=gen, dtype=dtype),
    )
    slots = torch.cat([ta.gather_slots(tables[i : i + 1], block_size, n)[0, n - c :]
                       for i, (n, c) in enumerate(zip(lengths, n_new, strict=True))])  # fmt: skip
    qsl = [0]
    for c in n_new:
        qsl.append(qsl[-1] + c)

    def run(backend):
        meta = AttentionMetadata(
            num_decodes=len(decode_lens), query_start_loc=qsl, seq_lens=lengths,
            slot_mapping=slots, block_tables=tables, block_size=block_size,
            max_seq_len=max(lengths),
        )  # fmt: skip
        c = cache.clone()
        backend.prepare(meta)
        return backend.forward(q, k, v, c, meta, dim**-0.5), c

    out, c = run(TritonAttentionBackend())
    ref, ref_c = run(TorchAttentionBackend())
    torch.testing.assert_close(c, ref_c, atol=0, rtol=0)
    torch.testing.assert_close(out, ref, **TOL[dtype])


@pytest.mark.parametrize("decode_lens", [[], [3, 17], [40]])
@pytest.mark.parametrize("prefill", [True, False])
def test_backend_matches_torch_backend(decode_lens, prefill):
    if not decode_lens and not prefill:
        pytest.skip("empty step")
    prefill_lens, chunks = ([20, 9], [4, 9]) if prefill else ([], [])
    _check_backend(decode_lens, prefill_lens, chunks, 4, 2, 32, 16, torch.float32)


@cuda
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_backend_matches_torch_backend_cuda(dtype):
    decode_lens = [1, 100, 2000, 517] * 8
    _check_backend(decode_lens, [1500, 300, 64], [1500, 100, 1], 32, 8, 128, 16, dtype)


def test_pdl_launch_options(monkeypatch):
    """Programmatic dependent launch only where supported, enabled, and for small launches."""
    from pagoda.kernels import pdl

    cpu = torch.device("cpu")
    assert pdl.launch_options(cpu, 1) == {"PDL": False}
    monkeypatch.setattr(pdl, "_supported", lambda device: True)
    assert pdl.launch_options(cpu, pdl.MAX_ROWS) == {"PDL": True, "launch_pdl": True}
    assert pdl.launch_options(cpu, pdl.MAX_ROWS + 1) == {"PDL": False}
    monkeypatch.setattr(pdl, "ENABLED", False)
    assert pdl.launch_options(cpu, 1) == {"PDL": False}
