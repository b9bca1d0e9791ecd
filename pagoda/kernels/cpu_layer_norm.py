"""The C residual-add + LayerNorm kernel of the CPU path (float32 or bfloat16), compiled on
first use and called through ctypes; ``F.layer_norm(x + residual, ...)`` is its reference.

It runs on torch's own OpenMP pool (see :mod:`pagoda.kernels.c_library`). When no C compiler
is available :func:`load` returns None and callers use torch.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache

import torch

from pagoda.kernels.c_library import load_library

_FUNCTIONS = {torch.float32: "add_layer_norm_f32", torch.bfloat16: "add_layer_norm_bf16"}


@lru_cache(maxsize=1)
def load() -> ctypes.CDLL | None:
    """The kernel library with its signatures set, or None without a C compiler."""
    lib = load_library("add_layer_norm.c")
    if lib is None:
        return None
    for name in _FUNCTIONS.values():
        fn = getattr(lib, name)
        fn.restype = None
        fn.argtypes = (
            [ctypes.c_void_p, ctypes.c_long] * 2  # x, x_stride, residual, r_stride
            + [ctypes.c_void_p] * 3  # weight, bias, out
            + [ctypes.c_long, ctypes.c_long, ctypes.c_int]  # out_stride, rows, hidden
            + [ctypes.c_float, ctypes.c_int]  # eps, num_threads
        )
    return lib


def supports(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the kernel is built here and takes these tensors."""
    return (
        x.device.type == "cpu"
        and x.dtype in _FUNCTIONS
        and weight.dtype == x.dtype
        and load() is not None
    )


def add_layer_norm(
    x: torch.Tensor,
    residual: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``LayerNorm(x + residual) * weight + bias`` over the last dim of [rows, hidden]
    tensors (rows may be strided, elements contiguous); the sum is rounded to the dtype
    first, as torch's add does. weight and bias [hidden], contiguous, of x's dtype. Written
    to ``out`` (contiguous; it may be x or residual: each row is read before it is written)
    or a new tensor."""
    lib = load()
    assert lib is not None, "C kernels are unavailable; use torch"
    rows, hidden = x.shape
    if residual.shape != x.shape or residual.dtype != x.dtype:
        raise ValueError("x and residual must share shape and dtype")
    if x.stride(1) != 1 or residual.stride(1) != 1:
        raise ValueError("rows must be contiguous")
    weight, bias = weight.contiguous(), bias.contiguous()
    if out is None:
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
    elif out.shape != x.shape or out.dtype != x.dtype or not out.is_contiguous():
        raise ValueError("out must be a contiguous tensor of x's shape and dtype")
    getattr(lib, _FUNCTIONS[x.dtype])(
        x.data_ptr(),
        x.stride(0),
        residual.data_ptr(),
        residual.stride(0),
        weight.data_ptr(),
        bias.data_ptr(),
        out.data_ptr(),
        out.stride(0),
        rows,
        hidden,
        eps,
        max(1, min(torch.get_num_threads(), rows)),
    )
    return out
