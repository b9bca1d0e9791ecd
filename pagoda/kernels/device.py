"""What the kernels' launch choices need to know about a CUDA device."""

from __future__ import annotations

import functools

import torch


def _index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


@functools.cache
def _shared_memory(index: int) -> int:
    import triton

    return triton.runtime.driver.active.utils.get_device_properties(index)["max_shared_mem"]


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of ``device`` (a CUDA device), looked up once per device."""
    return _sm_count(_index(device))


def shared_memory(device: torch.device) -> int:
    """Bytes of shared memory one program may use on ``device`` (a CUDA device; H100: 227
    KiB), the limit Triton checks a kernel against, looked up once per device."""
    return _shared_memory(_index(device))
