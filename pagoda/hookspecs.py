"""Every hook a pagoda plugin can implement.

A plugin is a module (named by an entry point in the ``pagoda`` group) holding functions
decorated with :data:`hookimpl`. Hooks run at start-up, in every process that builds an
engine; the step loop never calls a hook. Collect-all hooks receive a ``register`` callable
``register(name, value, **extra)`` where ``value`` is a class or a lazy ``"module:Class"``
string, so a plugin's entry module stays cheap to import (no torch at its top level).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click

    from pagoda.config import EngineConfig

hookspec = pluggy.HookspecMarker("pagoda")
hookimpl = pluggy.HookimplMarker("pagoda")

Register = Callable[..., None]


@hookspec
def register_models(register: Register) -> None:
    """Register model classes by HF ``architectures`` name.

    Called once per process when the plugin manager builds its registries.

    :param register: ``register(architecture, cls_or_ref, tasks=("generate",))``. ``tasks``
        lists what the class can do. A class must satisfy :class:`pagoda.interfaces.CausalLM`.
    """


@hookspec
def register_quant_methods(register: Register) -> None:
    """Register quantization methods by ``--quantization`` name.

    :param register: ``register(name, cls_or_ref)``; the class implements
        :class:`pagoda.interfaces.QuantMethod`.
    """


@hookspec
def register_tool_parsers(register: Register) -> None:
    """Register tool-call parsers by ``--tool-call-parser`` name.

    Called once per process when the registries are built (server start-up).

    :param register: ``register(name, cls_or_ref)``; the class implements the tool-parser
        contract of :mod:`pagoda.interfaces` (vLLM's ``ToolParser`` method names).
    """


@hookspec
def register_reasoning_parsers(register: Register) -> None:
    """Register reasoning parsers by ``--reasoning-parser`` name.

    Called once per process when the registries are built (server start-up).

    :param register: ``register(name, cls_or_ref)``; the class implements the reasoning-parser
        contract of :mod:`pagoda.interfaces` (vLLM's ``ReasoningParser`` method names).
    """


@hookspec
def register_guided_backends(register: Register) -> None:
    """Register guided-decoding backends by name (``--guided-decoding-backend``).

    Called once per process when the registries are built.

    :param register: ``register(name, cls_or_ref, priority=0)``; the class implements the
        guided-decoding contract of :mod:`pagoda.interfaces`. ``auto`` tries backends by
        descending priority, falling back when one cannot express a constraint.
    """


@hookspec
def register_attention_backends(register: Register) -> None:
    """Register attention backends by name.

    :param register: ``register(name, cls_or_ref, devices=("cpu",), priority=0)``. The engine
        picks, for its device, the backend named by the config or else the one with the
        highest priority. The class implements :class:`pagoda.interfaces.AttentionBackend`.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add click commands to the ``pagoda`` command group.

    Called once, in the CLI process, before the command line is parsed.

    :param cli: the ``pagoda`` :class:`click.Group`; add commands with ``@cli.command()``.
    """


@hookspec(firstresult=True)
def resolve_model(hf_config: Any, model_path: str) -> str | None:
    """Pick which registered architecture serves this checkpoint.

    Called once at engine start-up. Stops at first non-None result. The built-in fallback
    (``trylast``) returns the first name in ``hf_config.architectures``.

    :param hf_config: the transformers ``PretrainedConfig`` of the checkpoint.
    :param model_path: the local path of the checkpoint (a directory or a GGUF file).
    :return: a name registered through :func:`register_models`, or None to pass.
    """


@hookspec(firstresult=True)
def resolve_quant_method(hf_quant_config: dict | None, requested: str | None) -> str | None:
    """Pick which registered quantization method handles this checkpoint.

    Called once at engine start-up. Stops at first non-None result. The built-in fallback
    (``trylast``) returns ``requested`` or the config's ``quant_method``.

    :param hf_quant_config: the checkpoint's ``quantization_config`` dict, or None.
    :param requested: the ``--quantization`` flag, or None.
    :return: a name registered through :func:`register_quant_methods`, or None to pass.
    """


@hookspec(historic=True)
def configure(config: EngineConfig) -> None:
    """Inspect or adjust the final engine config. Must be idempotent.

    Called by each engine after its config is final and before the model is built, in the
    engine's process. Historic: a plugin registered later still receives the call. Raising
    stops start-up with that error.

    :param config: the :class:`pagoda.config.EngineConfig`; a plugin may change defaults.
    """
