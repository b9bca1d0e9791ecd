"""Programmatic dependent launch (PDL) for the decode path's Triton kernels (NVIDIA Hopper and
newer): a kernel launched with :func:`launch_options` may have its programs placed on the GPU
while the kernel before it on the stream is still finishing, so the launch and the ramp-up of
one kernel overlap the tail of the previous one (a decode step of a small batch is hundreds
of kernels of a few microseconds each). Launches over more than ``MAX_ROWS`` rows go plainly.

Such a kernel must begin with :func:`await_previous`: it waits until the previous kernel has
finished and its writes are visible, before touching memory, then lets the next kernel's
programs be placed. Every kernel launched with PDL waiting this way keeps stream order
transitive. Elsewhere (the CPU, the Triton interpreter, older GPUs) kernels launch as usual.
"""

from __future__ import annotations

import os
from functools import cache

import torch
import triton
import triton.language as tl

__all__ = ["await_previous", "launch_options"]

ENABLED = True  # set False to launch every kernel plainly (for measuring what PDL buys)
# Launches over more rows (prefill chunks) go plainly: on H100 PDL made the mixed prefill
# steps 8% slower while it made decode steps of up to 256 requests 2-3% faster (docs/perf.md).
MAX_ROWS = 256


@triton.jit
def await_previous(PDL: tl.constexpr):
    """The first statement of a kernel launched with :func:`launch_options`."""
    if PDL:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()


@cache
def _supported(device: torch.device) -> bool:
    if device.type != "cuda" or os.environ.get("TRITON_INTERPRET") == "1":
        return False
    return torch.cuda.get_device_capability(device)[0] >= 9


def launch_options(device: torch.device, rows: int) -> dict[str, bool]:
    """Keyword arguments for a launch on ``device``, over ``rows`` tokens or requests, of a
    kernel with a ``PDL`` constexpr that starts with :func:`await_previous`."""
    if ENABLED and rows <= MAX_ROWS and _supported(device):
        return {"PDL": True, "launch_pdl": True}
    return {"PDL": False}
