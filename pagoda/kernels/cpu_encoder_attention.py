"""The C encoder-attention kernel of the CPU path (bidirectional, varlen, float32 or bfloat16),
compiled on first use and called through ctypes; torch's ``scaled_dot_product_attention`` on
each request alone is its reference.

It reads q, k and v as strided views of the rows (the fused qkv projection needs no split
copy), writes each head's output straight into its place in ``out``, and runs on torch's own
OpenMP pool (see :mod:`pagoda.kernels.c_library`). When no C compiler is available
:func:`load` returns None and callers use torch.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache

import torch

from pagoda.kernels.c_library import load_library, num_threads

_FUNCTIONS = {torch.float32: "encoder_attention_f32", torch.bfloat16: "encoder_attention_bf16"}


@lru_cache(maxsize=1)
def load() -> ctypes.CDLL | None:
    """The kernel library with its signatures set, or None without a C compiler."""
    lib = load_library("encoder_attention.c")
    if lib is None:
        return None
    common = (
        [ctypes.c_void_p] * 3  # q, k, v
        + [ctypes.c_long, ctypes.c_void_p, ctypes.c_long]  # in_stride, out, out_stride
        + [ctypes.c_void_p, ctypes.c_int]  # cu_seqlens, num_seqs
        + [ctypes.c_int, ctypes.c_int, ctypes.c_float, ctypes.c_int]  # H, D, scale, threads
    )
    lib.encoder_attention_f32.argtypes = common
    lib.encoder_attention_bf16.argtypes = [*common, ctypes.c_int]  # allow_amx
    for name in _FUNCTIONS.values():
        getattr(lib, name).restype = None
    return lib


def supports(dtype: torch.dtype) -> bool:
    """Whether the kernel is built here and takes ``dtype``."""
    return dtype in _FUNCTIONS and load() is not None


def encoder_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    scale: float,
    out: torch.Tensor,
    *,
    allow_amx: bool = True,
) -> None:
    """Attention within each request, written into ``out``: request i owns rows
    ``cu_seqlens[i]:cu_seqlens[i+1]``; rows past ``cu_seqlens[-1]`` are left alone.

    q, k, v [rows, heads, head_dim] CPU views with one row stride, heads and dims contiguous
    (e.g. ``qkv.unbind(1)`` of the fused [rows, 3, heads, head_dim] projection); out the same
    shape, heads and dims contiguous; all of one dtype that :func:`supports`. cu_seqlens
    int32 [num_seqs + 1], contiguous.

    bfloat16 with head_dim a multiple of 32 runs on AMX tiles where the CPU and OS have them;
    ``allow_amx=False`` forces the AVX path (tests and comparisons).
    """
    lib = load()
    assert lib is not None, "C kernels are unavailable; use torch"
    _, heads, dim = q.shape
    for t in (q, k, v, out):
        if t.dtype != q.dtype or t.shape != q.shape or t.stride()[1:] != (dim, 1):
            raise ValueError("q, k, v and out must share shape and dtype, heads contiguous")
    if k.stride(0) != q.stride(0) or v.stride(0) != q.stride(0):
        raise ValueError("q, k and v must share one row stride")
    if cu_seqlens.dtype != torch.int32 or not cu_seqlens.is_contiguous():
        raise ValueError("cu_seqlens must be a contiguous int32 tensor")
    num_seqs = cu_seqlens.numel() - 1
    extra = (int(allow_amx),) if q.dtype == torch.bfloat16 else ()
    getattr(lib, _FUNCTIONS[q.dtype])(
        q.data_ptr(),
        k.data_ptr(),
        v.data_ptr(),
        q.stride(0),
        out.data_ptr(),
        out.stride(0),
        cu_seqlens.data_ptr(),
        num_seqs,
        heads,
        dim,
        scale,
        num_threads(num_seqs * heads),
        *extra,
    )
