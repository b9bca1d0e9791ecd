"""Float32 linear layers computed from GGUF Q4_1 / Q8_0 blocks on the CPU (``csrc/gguf_linear.c``):
the weight stays in its 5- or 8.5-bit blocks and is dequantized inside the product, so a
decode step reads 4-6x fewer bytes than float32 weights. Reference: ``F.linear`` of the
dequantized weight (:func:`gguf.quants.dequantize`).

:func:`pack` rearranges a GGUF tensor's raw blocks once, at load; :func:`linear` then runs
``x @ W.T (+ bias)`` on torch's OpenMP pool (see :mod:`pagoda.kernels.c_library`). The C code
needs AVX-512: elsewhere :func:`load` returns None and callers keep the dequantized weight.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from functools import lru_cache

import torch

from pagoda.kernels.c_library import load_library, num_threads

# GGUF type name -> (the C kernel's format code, bytes of one 32-value block in the file)
FORMATS = {"Q4_1": (0, 20), "Q8_0": (1, 34)}
PANEL = 32  # output columns per packed panel (and values per GGUF block)


@dataclass(frozen=True, slots=True)
class PackedGGUFWeight:
    """A weight [out_features, in_features] in the kernel's panel layout."""

    data: torch.Tensor  # uint8, [out_features // 32, in_features // 32, bytes per panel block]
    format: int
    out_features: int
    in_features: int


@lru_cache(maxsize=1)
def load() -> ctypes.CDLL | None:
    """The kernel library with its signature set, or None where it cannot run (no C compiler,
    or a build without AVX-512)."""
    lib = load_library("gguf_linear.c")
    if lib is None or not lib.gguf_linear_supported():
        return None
    fn = lib.gguf_linear_f32
    fn.restype = ctypes.c_int
    fn.argtypes = [
        ctypes.c_void_p,  # x
        ctypes.c_long,  # x row stride
        ctypes.c_void_p,  # packed weight
        ctypes.c_int,  # format
        ctypes.c_void_p,  # out
        ctypes.c_long,  # out row stride
        ctypes.c_long,  # rows
        ctypes.c_long,  # out_features
        ctypes.c_long,  # in_features
        ctypes.c_int,  # threads
    ]
    return lib


def pack(raw: torch.Tensor, type_name: str) -> PackedGGUFWeight | None:
    """The panel layout of a GGUF tensor's raw blocks ``raw`` (uint8 [out_features, bytes per
    row], the file's order), or None if the kernel cannot take it (another block type, or a
    dimension that is not a multiple of 32)."""
    if type_name not in FORMATS:
        return None
    fmt, block_bytes = FORMATS[type_name]
    rows, row_bytes = raw.shape
    if rows % PANEL or row_bytes % block_bytes:
        return None
    panels, blocks = rows // PANEL, row_bytes // block_bytes
    # [panel, column, block, byte] -> per (panel, block): the 32 columns' scales, then the
    # quantized values as rows of 32 columns (see csrc/gguf_linear.c).
    b = raw.reshape(panels, PANEL, blocks, block_bytes)

    def columns_last(part: torch.Tensor) -> torch.Tensor:
        return part.permute(0, 2, 3, 1).reshape(panels, blocks, -1)

    def scales(start: int) -> torch.Tensor:
        # float16 scale bytes stay together: [panel, block, column, 2 bytes]
        return b[..., start : start + 2].permute(0, 2, 1, 3).reshape(panels, blocks, -1)

    if type_name == "Q4_1":
        parts = [scales(0), scales(2), columns_last(b[..., 4:])]
    else:
        parts = [scales(0), columns_last(b[..., 2:])]
    data = torch.cat(parts, dim=-1).contiguous()
    return PackedGGUFWeight(data, fmt, rows, blocks * PANEL)


def supports(x: torch.Tensor) -> bool:
    """Whether :func:`linear` takes ``x``: float32 CPU rows [rows, in_features] with contiguous
    elements, and the kernel is built here."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.dim() == 2
        and x.stride(1) == 1
        and load() is not None
    )


def linear(
    x: torch.Tensor, weight: PackedGGUFWeight, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """``x @ W.T (+ bias)`` for an ``x`` that :func:`supports` accepts."""
    lib = load()
    assert lib is not None
    rows = x.shape[0]
    if x.shape[1] != weight.in_features:
        raise ValueError(f"input has {x.shape[1]} features, the weight {weight.in_features}")
    out = torch.empty(rows, weight.out_features, dtype=torch.float32)
    if rows:
        panels = weight.out_features // PANEL
        failed = lib.gguf_linear_f32(
            x.data_ptr(),
            x.stride(0),
            weight.data.data_ptr(),
            weight.format,
            out.data_ptr(),
            weight.out_features,
            rows,
            weight.out_features,
            weight.in_features,
            num_threads(panels),
        )
        if failed:
            raise RuntimeError("gguf_linear_f32 refused its arguments")
    if bias is not None:
        out += bias
    return out
