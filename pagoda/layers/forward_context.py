"""The per-step context attention layers read: the batch's metadata and the attention backend.

The model runner sets it for exactly one forward pass with ``with forward_context(ctx):``.
It is a context variable, so it cannot leak into another step or thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch

from pagoda.interfaces.attention import AttentionBackend
from pagoda.layers.attention_metadata import AttentionMetadata


@dataclass(slots=True)
class ForwardContext:
    """What one forward pass's attention layers need besides their inputs.

    ``split_at_attention``, when set, is called by each attention layer with
    ``(layer, q, k, v)`` instead of attending, and its result is the layer's output: the
    piecewise CUDA-graph capture ends a graph there (``meta`` may then be None)."""

    meta: AttentionMetadata | None
    backend: AttentionBackend
    split_at_attention: Callable[..., torch.Tensor] | None = None


_current: ContextVar[ForwardContext | None] = ContextVar("pagoda_forward_context", default=None)


@contextmanager
def forward_context(ctx: ForwardContext) -> Iterator[ForwardContext]:
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


def get_forward_context() -> ForwardContext:
    ctx = _current.get()
    if ctx is None:
        raise RuntimeError("attention ran outside `with forward_context(...)`")
    return ctx
