"""The C residual-add + norm kernels of the CPU path, compiled on first use and called through
ctypes: LayerNorm (float32 or bfloat16; reference ``F.layer_norm(x + residual, ...)``) and
RMSNorm (float32; reference ``F.rms_norm(x + residual, ...)``).

It runs on torch's own OpenMP pool (see :mod:`pagoda.kernels.c_library`). When no C compiler
is available :func:`load` returns None and callers use torch.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache

import torch

from pagoda.kernels.c_library import load_library, num_threads

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
    rms = lib.add_rms_norm_f32
    rms.restype = None
    rms.argtypes = (
        [ctypes.c_void_p, ctypes.c_long] * 2  # x, x_stride, residual (or None), r_stride
        + [ctypes.c_void_p]  # weight
        + [ctypes.c_void_p, ctypes.c_long] * 2  # out, out_stride, sum (or None), s_stride
        + [ctypes.c_long, ctypes.c_int, ctypes.c_float, ctypes.c_int]  # rows, hidden, eps, thr.
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
        num_threads(rows),
    )
    return out


def supports_rms(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :func:`add_rms_norm` is built here and takes these tensors: float32 CPU rows
    [rows, hidden] with contiguous elements, a float32 weight."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.dim() == 2
        and x.stride(1) == 1
        and weight.dtype == torch.float32
        and load() is not None
    )


def add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(rms_norm(s) * weight, s)`` with ``s = x + residual``, or ``(rms_norm(x) * weight,
    None)`` without a residual, for inputs that :func:`supports_rms` accepts."""
    lib = load()
    assert lib is not None, "C kernels are unavailable; use torch"
    rows, hidden = x.shape
    if residual is not None and (residual.shape != x.shape or residual.stride(1) != 1):
        raise ValueError("residual must be rows of x's shape with contiguous elements")
    weight = weight.contiguous()  # kept alive for the call
    out = torch.empty(rows, hidden, dtype=x.dtype)
    total = torch.empty_like(out) if residual is not None else None
    lib.add_rms_norm_f32(
        x.data_ptr(),
        x.stride(0),
        None if residual is None else residual.data_ptr(),
        0 if residual is None else residual.stride(0),
        weight.data_ptr(),
        out.data_ptr(),
        hidden,
        None if total is None else total.data_ptr(),
        hidden,
        rows,
        hidden,
        eps,
        num_threads(rows),
    )
    return out, total
