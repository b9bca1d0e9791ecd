"""Build, cache and load the C kernels of ``pagoda/kernels/csrc``.

A source is compiled on first use with the system C compiler (beside the directory's
headers, ``csrc/*.h``), cached under ``$PAGODA_CACHE_DIR`` (default ``~/.cache/pagoda``)
``/kernels`` with a name keyed by a hash of the source, the headers, the flags and the CPU
(``-march=native`` code from one CPU may not run on another that shares the cache), and
loaded with ctypes. Without a compiler (or with
``PAGODA_DISABLE_C_KERNELS`` set) :func:`load_library` returns None and callers use torch.

Built with ``-fopenmp`` in a process that has loaded torch, a library binds to torch's
already-loaded libgomp (same soname), so torch's worker pool runs its parallel regions;
callers pass :func:`num_threads` of their work.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from functools import cache
from importlib import resources
from pathlib import Path

import torch

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


def _cpu_id() -> str:
    """The CPU's feature flags where Linux lists them, else the architecture's name."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.machine()


def _headers() -> dict[str, bytes]:
    """The shared headers of ``csrc``, by file name."""
    csrc = resources.files("pagoda.kernels").joinpath("csrc")
    return {
        entry.name: entry.read_bytes()
        for entry in sorted(csrc.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".h")
    }


def _build(
    compiler: str, name: str, source: bytes, headers: dict[str, bytes], target: Path
) -> bool:
    """Compile with OpenMP if the compiler can, else without; False if neither works."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for header, text in headers.items():
            (Path(tmp) / header).write_bytes(text)
        src = Path(tmp) / name
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


@cache
def load_library(source_name: str) -> ctypes.CDLL | None:
    """The compiled ``csrc/<source_name>`` (built once per source version and flags), or None
    when it cannot be built here. The caller sets each function's ctypes signature."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None or os.environ.get("PAGODA_DISABLE_C_KERNELS"):
        return None
    source = resources.files("pagoda.kernels").joinpath(f"csrc/{source_name}").read_bytes()
    headers = _headers()
    key = source + b"".join(headers.values()) + " ".join(_FLAGS).encode() + _cpu_id().encode()
    digest = hashlib.sha256(key).hexdigest()[:16]
    target = _cache_dir() / f"{Path(source_name).stem}_{digest}.so"
    if not target.exists() and not _build(compiler, source_name, source, headers, target):
        return None
    return ctypes.CDLL(str(target))


def num_threads(tasks: int) -> int:
    """The OpenMP threads for a call with ``tasks`` independent pieces of work: torch's
    thread count, but no more threads than pieces (and at least one)."""
    return max(1, min(torch.get_num_threads(), tasks))
