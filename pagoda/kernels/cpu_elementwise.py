"""The C elementwise kernels of the CPU path, float32, compiled on first use and called through
ctypes: SiLU-and-mul (reference :func:`pagoda.kernels.activation_ref.silu_and_mul`) and
rotate-half rotary embedding (reference :func:`pagoda.kernels.rotary_ref.rotary_embedding`).

It runs on torch's own OpenMP pool (see :mod:`pagoda.kernels.c_library`). When no C compiler
is available :func:`load` returns None and callers use torch.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache

import torch

from pagoda.kernels.c_library import load_library, num_threads


@lru_cache(maxsize=1)
def load() -> ctypes.CDLL | None:
    """The kernel library with its signatures set, or None without a C compiler."""
    lib = load_library("cpu_elementwise.c")
    if lib is None:
        return None
    silu = lib.silu_and_mul_f32
    silu.restype = None
    silu.argtypes = (
        [ctypes.c_void_p, ctypes.c_long] * 2  # x, x_stride, out, out_stride
        + [ctypes.c_long, ctypes.c_int, ctypes.c_int]  # rows, d, num_threads
    )
    rotary = lib.rotary_f32
    rotary.restype = ctypes.c_int  # nonzero: a position outside the caches, x untouched
    rotary.argtypes = (
        [ctypes.c_void_p]  # positions
        + [ctypes.c_void_p, ctypes.c_long, ctypes.c_long] * 2  # x, out and their strides
        + [ctypes.c_void_p] * 2  # cos_cache, sin_cache
        + [ctypes.c_long] * 2  # max_position, tokens
        + [ctypes.c_int, ctypes.c_int]  # heads, head_dim
        + [ctypes.c_int, ctypes.c_int]  # half, num_threads
    )
    return lib


def supports_silu_and_mul(x: torch.Tensor) -> bool:
    """Whether :func:`silu_and_mul` is built here and takes ``x``: float32 CPU rows
    [rows, 2 * d] with contiguous elements."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.dim() == 2
        and x.shape[1] % 2 == 0
        and x.stride(1) == 1
        and load() is not None
    )


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """``silu(x[:, :d]) * x[:, d:]`` as a new contiguous [rows, d] tensor, for an ``x`` that
    :func:`supports_silu_and_mul` accepts (rows may be strided)."""
    lib = load()
    assert lib is not None, "C kernels are unavailable; use torch"
    rows, d = x.shape[0], x.shape[1] // 2
    out = torch.empty(rows, d, dtype=x.dtype)
    lib.silu_and_mul_f32(x.data_ptr(), x.stride(0), out.data_ptr(), d, rows, d, num_threads(rows))
    return out


def supports_rotary(x: torch.Tensor, cos_cache: torch.Tensor) -> bool:
    """Whether :func:`rotary` is built here and takes ``x`` with this cache: float32 CPU
    [tokens, heads, head_dim] with contiguous elements, a float32 cache of at most
    head_dim / 2 columns."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.dim() == 3
        and x.stride(2) == 1
        and cos_cache.dtype == torch.float32
        and 2 * cos_cache.shape[-1] <= x.shape[2]
        and load() is not None
    )


def rotary(
    positions: torch.Tensor,
    x: torch.Tensor,
    cos_cache: torch.Tensor,
    sin_cache: torch.Tensor,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Rotate-half rotary embedding of ``x`` [tokens, heads, head_dim] (any token and head
    strides, contiguous elements) at ``positions`` [tokens] (integers, each below the caches'
    length): with ``c, s = cos_cache[p], sin_cache[p]`` ([max_position, rotary_dim / 2],
    float32) and ``x1, x2`` the halves of a head's first rotary_dim features,
    ``(x1 * c - x2 * s, x2 * c + x1 * s)``; later features pass through. Written to ``out``
    (same shape; it may be ``x``) or a new contiguous tensor, and returned. A position
    outside the caches raises IndexError before anything is written."""
    tokens, heads, head_dim = x.shape
    if out is None:
        out = torch.empty(tokens, heads, head_dim, dtype=x.dtype)
    elif out.shape != x.shape or out.dtype != x.dtype or out.stride(2) != 1:
        raise ValueError("out must be of x's shape and dtype, with contiguous elements")
    return _rotary(positions, x, cos_cache, sin_cache, out)


def rotary_(
    positions: torch.Tensor, x: torch.Tensor, cos_cache: torch.Tensor, sin_cache: torch.Tensor
) -> torch.Tensor:
    """:func:`rotary` in place: ``x`` is overwritten and returned."""
    return _rotary(positions, x, cos_cache, sin_cache, x)


def _rotary(
    positions: torch.Tensor,
    x: torch.Tensor,
    cos_cache: torch.Tensor,
    sin_cache: torch.Tensor,
    out: torch.Tensor,
) -> torch.Tensor:
    # Lean on purpose: every layer calls this once a step, on a few kilobytes at decode.
    lib = load()
    assert lib is not None, "C kernels are unavailable; use torch"
    tokens, heads, head_dim = x.shape
    half = cos_cache.shape[-1]
    if positions.shape != (tokens,) or positions.dtype != torch.int64:
        if positions.is_floating_point() or positions.numel() != tokens:
            raise ValueError("positions must be [tokens] integers")
        positions = positions.long().reshape(tokens)
    if sin_cache.shape != cos_cache.shape or 2 * half > head_dim or x.stride(2) != 1:
        raise ValueError("x must have contiguous heads of at least the caches' rotary_dim")
    # Named, so that a copy made here lives through the call.
    positions, cos_cache, sin_cache = (
        positions.contiguous(),
        cos_cache.contiguous(),
        sin_cache.contiguous(),
    )
    x_stride, o_stride = x.stride(), out.stride()
    bad = lib.rotary_f32(
        positions.data_ptr(),
        x.data_ptr(),
        x_stride[0],
        x_stride[1],
        out.data_ptr(),
        o_stride[0],
        o_stride[1],
        cos_cache.data_ptr(),
        sin_cache.data_ptr(),
        cos_cache.shape[0],
        tokens,
        heads,
        head_dim,
        half,
        num_threads(tokens),
    )
    if bad:
        raise IndexError(f"a position is outside the rotary caches' {cos_cache.shape[0]} rows")
    return out
