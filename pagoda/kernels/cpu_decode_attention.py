"""The C decode-attention kernel of the CPU path, compiled on first use and called through
ctypes; :func:`pagoda.kernels.attention_ref.decode_attention` is its reference.

It runs on torch's own OpenMP pool (see the C source). When no C compiler is available
:func:`load` returns None and callers use the torch reference.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache

import torch

from pagoda.kernels.c_library import load_library, num_threads


@lru_cache(maxsize=1)
def load() -> ctypes.CDLL | None:
    """The kernel library with its signature set, or None without a C compiler."""
    lib = load_library("paged_decode_attention.c")
    if lib is None:
        return None
    fn = lib.paged_decode_attention_f32
    fn.restype = None
    fn.argtypes = (
        [ctypes.c_void_p] * 6  # q, k_cache, v_cache, block_tables, seq_lens, out
        + [ctypes.c_int] * 5  # H, KVH, D, block_size, max_blocks
        + [ctypes.c_float]  # scale
        + [ctypes.c_int] * 2  # batch, num_threads
        + [ctypes.c_long, ctypes.c_void_p]  # scratch_stride, scratch
    )
    return lib


def paged_decode_attention(
    q: torch.Tensor,
    kv_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """Same result as the reference decode attention, for float32 CPU tensors.

    q [B, H, D]; kv_cache [2, num_blocks, block_size, KVH, D]; block_tables [B, max_blocks]
    int32; seq_lens [B] int32. Returns [B, H, D].
    """
    lib = load()
    assert lib is not None, "C kernels are unavailable; use the torch reference"
    q = q.contiguous()
    block_tables = block_tables.contiguous()
    seq_lens = seq_lens.contiguous()
    batch, heads, dim = q.shape
    _, _, block_size, kv_heads, _ = kv_cache.shape
    out = torch.empty_like(q)
    threads = num_threads(batch * kv_heads)
    stride = heads * int(seq_lens.max())
    scratch = torch.empty(threads * stride, dtype=torch.float32)
    lib.paged_decode_attention_f32(
        q.data_ptr(),
        kv_cache[0].data_ptr(),
        kv_cache[1].data_ptr(),
        block_tables.data_ptr(),
        seq_lens.data_ptr(),
        out.data_ptr(),
        heads,
        kv_heads,
        dim,
        block_size,
        block_tables.shape[1],
        scale,
        batch,
        threads,
        stride,
        scratch.data_ptr(),
    )
    return out
