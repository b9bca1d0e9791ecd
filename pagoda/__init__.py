"""pagoda: an LLM inference and serving engine.

Importing ``pagoda`` (e.g. for :data:`hookimpl` in a plugin's entry module) is cheap: the
engine classes load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pagoda.hookspecs import hookimpl

if TYPE_CHECKING:
    from pagoda.llm import LLM
    from pagoda.outputs import CompletionOutput, Logprob, RequestOutput
    from pagoda.sampling_params import SamplingParams

__all__ = ["LLM", "CompletionOutput", "Logprob", "RequestOutput", "SamplingParams", "hookimpl"]
__version__ = "0.1.0"

_LAZY = {
    "LLM": "pagoda.llm",
    "CompletionOutput": "pagoda.outputs",
    "Logprob": "pagoda.outputs",
    "RequestOutput": "pagoda.outputs",
    "SamplingParams": "pagoda.sampling_params",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pagoda' has no attribute {name!r}")
