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
    from pagoda.pooling_params import PoolingParams, PoolingRequestOutput
    from pagoda.sampling_params import SamplingParams

__all__ = [
    "LLM",
    "CompletionOutput",
    "Logprob",
    "RequestOutput",
    "SamplingParams",
    "PoolingParams",
    "PoolingRequestOutput",
    "get_reasoning_parser",
    "get_tool_parser",
    "hookimpl",
]
__version__ = "0.1.0"

_LAZY = {
    "LLM": "pagoda.llm",
    "CompletionOutput": "pagoda.outputs",
    "Logprob": "pagoda.outputs",
    "RequestOutput": "pagoda.outputs",
    "SamplingParams": "pagoda.sampling_params",
    "PoolingParams": "pagoda.pooling_params",
    "PoolingRequestOutput": "pagoda.pooling_params",
}


def get_tool_parser(name: str) -> type:
    """The tool-call parser class registered as ``name`` (built-in or from a plugin), as
    ``--tool-call-parser NAME`` uses it. An unknown name raises ``RegistryError`` (a
    ``ValueError``) listing the known ones."""
    from pagoda.plugin_manager import get_plugin_manager

    return get_plugin_manager().tool_parsers.get(name)  # type: ignore[no-any-return]


def get_reasoning_parser(name: str) -> type:
    """The reasoning parser class registered as ``name``, as ``--reasoning-parser NAME``
    uses it. An unknown name raises ``RegistryError`` (a ``ValueError``) listing the known
    ones."""
    from pagoda.plugin_manager import get_plugin_manager

    return get_plugin_manager().reasoning_parsers.get(name)  # type: ignore[no-any-return]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pagoda' has no attribute {name!r}")
