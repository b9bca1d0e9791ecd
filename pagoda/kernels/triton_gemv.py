"""Triton matrix-vector products for decode batches of a few rows: ``x @ W.T (+ b)`` with the
weight in its checkpoint layout [N, K], and the gate-up projection with SiLU-and-mul fused.

At one to a few rows a linear layer only streams its weight once, so it runs at memory
bandwidth or not at all. cuBLAS picks split-K kernels plus a reduction kernel for some of these
shapes and leaves a 4096 x 4096 matrix at 2.04 of the 3.01 TB/s copy bandwidth on an H100
(docs/perf.md); here each program owns ``BLOCK_N`` output features and streams their rows of
the weight over the whole K once, with no reduction pass. Launched with programmatic
dependent launch (Hopper), each program first asks L2 for the leading columns of its weight
rows, which do not depend on the previous kernel, and only then waits for that kernel to end.

The references are ``F.linear`` and ``silu_and_mul(F.linear(...))`` (activation_ref).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from pagoda.kernels import pdl
from pagoda.kernels.device import shared_memory, sm_count

__all__ = ["MAX_ROWS", "SILU_AND_MUL_MAX_ROWS", "gemv", "gemv_silu_and_mul", "supports"]

MAX_ROWS = 16  # more rows: cuBLAS is as fast or faster (docs/perf.md)
# The fused gate-up + SiLU saves cuBLAS's projection round trip and the activation kernel, and
# stays ahead of cuBLAS + SiLU up to 128 rows (H100, docs/perf.md).
SILU_AND_MUL_MAX_ROWS = 128
# Shared memory a program's tiles may not use: what Triton's own scratch needs beside them.
_SHARED_MEMORY_RESERVE = 16 * 1024
# Bytes of weight a launch with PDL pulls into L2 while the kernel before it finishes, spread
# over the programs that can start at once (0: none).
PREFETCH_BYTES = 12 * 2**20


def supports(x: torch.Tensor, weight: torch.Tensor, max_rows: int = MAX_ROWS) -> bool:
    """True when ``gemv`` handles ``x @ weight.T``: a CUDA half-precision 2-D input of at most
    ``max_rows`` rows, a contiguous weight, and K a multiple of 64. ``gemv_silu_and_mul``
    takes up to SILU_AND_MUL_MAX_ROWS rows."""
    return (
        x.is_cuda
        and x.dim() == 2
        and 0 < x.shape[0] <= max_rows
        and x.dtype in (torch.bfloat16, torch.float16)
        and weight.dtype == x.dtype
        and weight.is_contiguous()
        and weight.shape[1] % 64 == 0
    )


def _config(
    block_m: int, n: int, k: int, silu_and_mul: bool, shared_bytes: int
) -> tuple[int, int, int, int]:
    """(BLOCK_N, BLOCK_K, num_warps, num_stages) for an [n, k] weight (n: outputs written),
    from sweeps on H100 over the Llama-3.1-8B and Qwen3-0.6B shapes (benchmarks/gemv_sweep.py,
    docs/perf.md): long rows and very many rows want deep pipelines of wide K tiles, wide
    matrices shallower ones; the fused gate-up at more than 16 rows wants 64 outputs per
    program when it is wide, and 8 warps at 128 rows. Stages are capped by the tiles that fit
    in ``shared_bytes`` of shared memory, and K tiles narrowed until two stages fit."""
    block_n, warps = 32, 4
    if silu_and_mul and block_m > 16:
        block_n = 64 if n >= 8192 else 32
        block_k = 256 if block_n == 32 and block_m <= 32 else 128
        warps, stages = (8, 3) if block_m >= 128 else (4, 4)
    elif silu_and_mul:
        block_k, stages = 256, 3
    elif k >= 8192 or n >= 65536:
        block_k, stages = 256, 6
    elif n >= 16384:
        block_k, stages = 128, 3
    else:
        block_k, stages = 128, 6
    if k % block_k:
        block_k = 64
    tile_rows = block_m + block_n * (2 if silu_and_mul else 1)
    while block_k > 64 and 2 * tile_rows * block_k * 2 > shared_bytes:
        block_k //= 2  # GPUs with less shared memory (~100 KiB): narrower K tiles
    return block_n, block_k, warps, max(2, min(stages, shared_bytes // (tile_rows * block_k * 2)))


def _prefetch_cols(programs: int, rows: int, k: int, device: torch.device) -> int:
    """Leading weight columns each program prefetches before waiting on the previous kernel: a
    power of two of at least one 128-byte line (64 columns), or 0. Only the programs placed
    while the previous kernel runs gain from it (about two per SM)."""
    starting = min(programs, 2 * sm_count(device))
    cols = min(k, PREFETCH_BYTES // (starting * rows * 2))
    return 0 if cols < 64 else 1 << (cols.bit_length() - 1)


@triton.jit
def _prefetch_rows(w_ptr, offs_n, N, K, COLS: tl.constexpr):
    """Ask L2 for the first COLS columns of weight rows ``offs_n`` (clamped to N), one
    prefetch per 128-byte line; nothing is loaded into registers."""
    rows = tl.minimum(offs_n, N - 1).to(tl.int64) * K
    lines = tl.arange(0, COLS // 64) * 64
    tl.inline_asm_elementwise(
        "prefetch.global.L2 [$1]; // $0",
        "=r,l",
        [w_ptr + rows[:, None] + lines[None, :]],
        dtype=tl.int32,
        is_pure=False,
        pack=1,
    )


@triton.jit
def _gemv_kernel(
    x_ptr,
    w_ptr,
    b_ptr,
    out_ptr,
    M,
    N,
    K,
    stride_xm,
    stride_om,
    UP_OFFSET,
    HAS_BIAS: tl.constexpr,
    SILU_AND_MUL: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PDL: tl.constexpr,
    PREFETCH_COLS: tl.constexpr,
):
    # out[m, n] = sum_k x[m, k] * w[n, k]; with SILU_AND_MUL, rows n (gate) and n + UP_OFFSET
    # (up) of w are both read and out[m, n] = silu(gate) * up.
    pid = tl.program_id(0)
    offs_n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    if PREFETCH_COLS > 0:
        # The weight does not depend on the previous kernel, so HBM need not sit idle while
        # that kernel finishes: start streaming this program's rows into L2 now.
        _prefetch_rows(w_ptr, offs_n, N, K, PREFETCH_COLS)
        if SILU_AND_MUL:
            _prefetch_rows(w_ptr + UP_OFFSET * K, offs_n, N, K, PREFETCH_COLS)
    pdl.await_previous(PDL)
    offs_m = tl.arange(0, BLOCK_M)
    offs_k = tl.arange(0, BLOCK_K)
    n_mask = offs_n < N
    x_ptrs = x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :]
    x_mask = offs_m[:, None] < M
    w_ptrs = w_ptr + offs_n[:, None].to(tl.int64) * K + offs_k[None, :]
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    acc_up = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for _ in range(0, K, BLOCK_K):
        x = tl.load(x_ptrs, mask=x_mask, other=0.0)
        w = tl.load(w_ptrs, mask=n_mask[:, None], other=0.0)
        acc = tl.dot(x, tl.trans(w), acc)
        if SILU_AND_MUL:
            w_up = tl.load(w_ptrs + UP_OFFSET * K, mask=n_mask[:, None], other=0.0)
            acc_up = tl.dot(x, tl.trans(w_up), acc_up)
        x_ptrs += BLOCK_K
        w_ptrs += BLOCK_K
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
        if SILU_AND_MUL:
            acc_up += tl.load(b_ptr + UP_OFFSET + offs_n, mask=n_mask, other=0.0).to(tl.float32)[
                None, :
            ]
    if SILU_AND_MUL:
        # Rounded as the unfused path rounds: the projection, then silu(gate), then the product.
        gate = acc.to(out_ptr.dtype.element_ty).to(tl.float32)
        up = acc_up.to(out_ptr.dtype.element_ty).to(tl.float32)
        act = (gate / (1.0 + tl.exp(-gate))).to(out_ptr.dtype.element_ty).to(tl.float32)
        acc = act * up
    out_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=x_mask & n_mask[None, :])


def _launch(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    n: int,
    up_offset: int,
    silu_and_mul: bool,
    config: tuple[int, int, int, int] | None,
) -> torch.Tensor:
    m, k = x.shape
    if x.stride(1) != 1:
        x = x.contiguous()
    out = torch.empty(m, n, dtype=x.dtype, device=x.device)
    block_m = max(16, triton.next_power_of_2(m))  # tl.dot's smallest tile is 16 rows
    # (The interpreter has no shared memory, and no limit.)
    budget = shared_memory(x.device) - _SHARED_MEMORY_RESERVE if x.is_cuda else 2**31
    block_n, block_k, warps, stages = config or _config(block_m, n, k, silu_and_mul, budget)
    programs = triton.cdiv(n, block_n)
    launch = pdl.launch_options(x.device, m)
    rows = block_n * (2 if silu_and_mul else 1)
    prefetch = _prefetch_cols(programs, rows, k, x.device) if launch["PDL"] else 0
    _gemv_kernel[(programs,)](
        x,
        weight,
        bias if bias is not None else weight,
        out,
        m,
        n,
        k,
        x.stride(0),
        out.stride(0),
        up_offset,
        HAS_BIAS=bias is not None,
        SILU_AND_MUL=silu_and_mul,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        num_warps=warps,
        num_stages=stages,
        PREFETCH_COLS=prefetch,
        **launch,
    )
    return out


def gemv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    config: tuple[int, int, int, int] | None = None,
) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for inputs that :func:`supports` accepts; ``config``
    (BLOCK_N, BLOCK_K, num_warps, num_stages) overrides the shape's default (for tuning)."""
    return _launch(x, weight, bias, weight.shape[0], 0, False, config)


def gemv_silu_and_mul(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    config: tuple[int, int, int, int] | None = None,
) -> torch.Tensor:
    """``silu_and_mul(F.linear(x, weight, bias))`` for a fused gate-up weight [2 * I, K]:
    [M, I], without writing the projection."""
    half = weight.shape[0] // 2
    return _launch(x, weight, bias, half, half, True, config)
