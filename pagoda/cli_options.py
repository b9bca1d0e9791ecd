"""The engine flags shared by every command that builds an engine (vLLM's names)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from pagoda.config import DEFAULT_MODEL, LOAD_FORMATS, EngineConfig

if TYPE_CHECKING:
    from pagoda.llm import LLM

_OPTIONS = [
    click.option(
        "--tokenizer", default=None, help="Tokenizer path or alias (default: the model's)."
    ),
    click.option(
        "--dtype",
        default="auto",
        show_default=True,
        type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
        help="Weight and activation dtype; auto = float32 on CPU, bfloat16 on CUDA.",
    ),
    click.option(
        "--max-model-len",
        type=int,
        default=None,
        help="Context length; default: the model's max_position_embeddings.",
    ),
    click.option(
        "--load-format",
        default="auto",
        show_default=True,
        type=click.Choice(LOAD_FORMATS),
        help="Weight source; dummy = random weights at the right shapes.",
    ),
    click.option(
        "--quantization",
        "-q",
        default=None,
        help="Quantization method (see `pagoda plugins`); default: the checkpoint's own "
        "(gguf for a GGUF file), else none.",
    ),
    click.option("--seed", type=int, default=0, show_default=True, help="Seed for dummy weights."),
    click.option(
        "--block-size", type=int, default=16, show_default=True, help="Tokens per KV-cache block."
    ),
    click.option(
        "--kv-cache-memory",
        type=int,
        default=None,
        help="KV-cache budget in bytes on CPU (default 2 GiB).",
    ),
    click.option(
        "--gpu-memory-utilization",
        type=float,
        default=0.9,
        show_default=True,
        help="Fraction of GPU memory the engine may use (CUDA).",
    ),
    click.option(
        "--enable-prefix-caching/--no-enable-prefix-caching",
        default=True,
        show_default=True,
        help="Automatic prefix caching.",
    ),
    click.option(
        "--max-num-seqs",
        type=int,
        default=256,
        show_default=True,
        help="Most sequences in one step.",
    ),
    click.option(
        "--max-num-batched-tokens",
        type=int,
        default=None,
        help="Most tokens in one step (longer prompts are prefilled in chunks). "
        "[default: 2048; 4096 for pooling models]",
    ),
    click.option(
        "--device",
        default="auto",
        show_default=True,
        type=click.Choice(["auto", "cpu", "cuda"]),
        help="Where the model runs.",
    ),
    click.option(
        "--attention-backend",
        default=None,
        help="Attention backend name (default: the best for the device).",
    ),
    click.option(
        "--enforce-eager",
        is_flag=True,
        default=False,
        help="Never capture CUDA graphs (decode or piecewise).",
    ),
    click.option(
        "--async-scheduling/--no-async-scheduling",
        default=None,
        help="Schedule and stage step n+1 while the device runs step n (default: on for "
        "CUDA, off for the CPU).",
    ),
    click.option(
        "--task",
        default="auto",
        show_default=True,
        type=click.Choice(["auto", "generate", "embed", "classify", "score", "reward"]),
        help="What the engine runs; auto: the architecture's first task (pooling tasks: "
        "embed, classify, score, reward).",
    ),
    click.option(
        "--runner",
        default="auto",
        show_default=True,
        type=click.Choice(["auto", "generate", "pooling"]),
        help="vLLM's newer form of --task: generate or pooling.",
    ),
    click.option(
        "--convert",
        default="auto",
        show_default=True,
        type=click.Choice(["auto", "none", "embed", "classify", "reward"]),
        help="Run the model as this pooling task (implies --runner pooling).",
    ),
    click.option(
        "--override-pooler-config",
        default=None,
        help='Pooler settings as JSON: {"pooling_type": "CLS|LAST|MEAN|ALL", "normalize": '
        'true, "softmax": true}.',
    ),
    click.option(
        "--pooler-config", default=None, help="The newer name of --override-pooler-config."
    ),
]

ENGINE_OPTION_NAMES = (
    "tokenizer",
    "dtype",
    "max_model_len",
    "load_format",
    "quantization",
    "seed",
    "block_size",
    "kv_cache_memory",
    "gpu_memory_utilization",
    "enable_prefix_caching",
    "max_num_seqs",
    "max_num_batched_tokens",
    "device",
    "attention_backend",
    "enforce_eager",
    "async_scheduling",
    "task",
    "runner",
    "convert",
    "override_pooler_config",
    "pooler_config",
)


def engine_flags(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add every engine flag (not the model) to a click command."""
    for option in reversed(_OPTIONS):
        func = option(func)
    return func


def engine_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the MODEL argument and every engine flag to a click command."""
    return click.argument("model", required=False, default=DEFAULT_MODEL)(engine_flags(func))


def pop_engine_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Remove the engine flags from a command's kwargs; return them with the model."""
    engine = {name: kwargs.pop(name) for name in ENGINE_OPTION_NAMES}
    engine["model"] = kwargs.pop("model")
    return engine


def checked_engine_config(engine: dict[str, Any]) -> EngineConfig:
    """The finalized config of the engine flags. A flag it rejects (an unknown model, a value
    out of range) is a usage error, raised before anything loads."""
    try:
        return EngineConfig.from_kwargs(**engine).finalize()
    except (ValueError, FileNotFoundError) as exc:
        raise click.UsageError(str(exc)) from None


def build_llm(engine: dict[str, Any]) -> LLM:
    """``LLM(**engine)``, with the flags checked first (:func:`checked_engine_config`) and the
    config that check finalized reused."""
    from pagoda.llm import LLM

    return LLM.from_engine_config(checked_engine_config(engine))
