"""The C decode-attention kernel of the CPU path, compiled on first use and called through
ctypes; :func:`pagoda.kernels.attention_ref.decode_attention` is its reference.

It runs on torch's own OpenMP pool (see the C source). When no C compiler is available
:func:`load` returns None and callers use the torch reference.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from functools import lru_cache
from importlib import resources
from pathlib import Path

import torch

_SOURCE = "paged_decode_attention.c"
_FLAGS = [
    "-O3",
    "-march=native",
    "-ffast-math",
    "-fno-finite-math-only",
    "-shared",
    "-fPIC",
    "-fopenmp",
]


def _cache_dir() -> Path:
    root = os.environ.get("PAGODA_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "pagoda"
    )
    return Path(root) / "kernels"


def _build(compiler: str, source: bytes, target: Path) -> bool:
    """Compile with OpenMP if the compiler can, else without; False if neither works."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / _SOURCE
        src.write_bytes(source)
        built = Path(tmp) / target.name
        for flags in (_FLAGS, [f for f in _FLAGS if f != "-fopenmp"]):
            result = subprocess.run(
                [compiler, *flags, str(src), "-o", str(built), "-lm"],
                capture_output=True,
                text=True,
            )
            if result.returncode == 0:
                os.replace(built, target)  # atomic: concurrent builders never see half a file
                return True
    return False


@lru_cache(maxsize=1)
def load() -> ctypes.CDLL | None:
    """Build (once per source version and machine flags) and load the kernel library."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None or os.environ.get("PAGODA_DISABLE_C_KERNELS"):
        return None
    source = resources.files("pagoda.kernels").joinpath(f"csrc/{_SOURCE}").read_bytes()
    digest = hashlib.sha256(source + " ".join(_FLAGS).encode()).hexdigest()[:16]
    target = _cache_dir() / f"paged_decode_attention_{digest}.so"
    if not target.exists() and not _build(compiler, source, target):
        return None
    lib = ctypes.CDLL(str(target))
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
    threads = max(1, min(torch.get_num_threads(), batch))
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
