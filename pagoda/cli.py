"""The ``pagoda`` command: generate, chat, plugins, bench (plus commands plugins add)."""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from pagoda.cli_options import build_llm, engine_flags, engine_options, pop_engine_kwargs
from pagoda.config import DEFAULT_MODEL


@click.group()
@click.version_option(package_name="pagoda-llm")
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level.")
def cli(verbose: bool) -> None:
    """pagoda: LLM inference and serving."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


def _sampling_options(func: Any) -> Any:
    for option in reversed(
        [
            click.option("--max-tokens", type=int, default=256, show_default=True),
            click.option("--temperature", type=float, default=0.7, show_default=True),
            click.option("--top-p", type=float, default=1.0, show_default=True),
            click.option("--top-k", type=int, default=0, show_default=True),
            click.option("--sampling-seed", type=int, default=None, help="Seed for sampling."),
        ]
    ):
        func = option(func)
    return func


def _sampling_params(kwargs: dict[str, Any]) -> Any:
    from pagoda.sampling_params import SamplingParams

    return SamplingParams(
        max_tokens=kwargs["max_tokens"],
        temperature=kwargs["temperature"],
        top_p=kwargs["top_p"],
        top_k=kwargs["top_k"],
        seed=kwargs["sampling_seed"],
    )


@cli.command()
@click.argument("prompt_args", nargs=-1, metavar="[PROMPT]...")
@click.option(
    "--model",
    default=DEFAULT_MODEL,
    show_default=True,
    help="Model: a local HF directory, a GGUF file, an alias or a cached hub id.",
)
@engine_flags
@click.option("--prompt", "prompts", multiple=True, help="A prompt (repeatable).")
@_sampling_options
def generate(**kwargs: Any) -> None:
    """Complete prompts: pagoda generate "The capital of France is" [--model MODEL]

    Prompts come as arguments or --prompt options; with none, one is read from standard input.
    """
    prompts = list(kwargs.pop("prompt_args")) + list(kwargs.pop("prompts"))
    llm = build_llm(pop_engine_kwargs(kwargs))
    for out in llm.generate(
        prompts or [sys.stdin.read()], _sampling_params(kwargs), use_tqdm=False
    ):
        click.echo(out.prompt + out.outputs[0].text)


@cli.command()
@engine_options
@click.option("--system", default=None, help="A system message.")
@_sampling_options
def chat(**kwargs: Any) -> None:
    """Chat interactively with a model; replies stream as they are generated."""
    from pagoda.chat import run_chat

    engine = pop_engine_kwargs(kwargs)
    run_chat(engine, _sampling_params(kwargs), kwargs["system"])


@cli.command()
def plugins() -> None:
    """List loaded plugins, their distributions, and what each registered."""
    from pagoda.plugin_manager import get_plugin_manager

    pm = get_plugin_manager()
    for hook in (
        "register_models",
        "register_attention_backends",
        "register_quant_methods",
        "register_tool_parsers",
        "register_reasoning_parsers",
        "register_guided_backends",
    ):
        pm.registry(hook)
    for info in pm.plugins.values():
        dist = f"{info.distribution} {info.version}" if info.distribution else "(in memory)"
        click.echo(f"{info.name}  [{dist}]")
        for kind, names in sorted(info.registered.items()):
            click.echo(f"    {kind}: {', '.join(names)}")


def _add_plugin_commands() -> None:
    from pagoda.bench.cli import bench
    from pagoda.plugin_manager import get_plugin_manager

    cli.add_command(bench)
    get_plugin_manager().hook.register_commands(cli=cli)


def main() -> None:
    _add_plugin_commands()
    cli()


@cli.command()
@engine_options
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option(
    "--served-model-name",
    "served_model_name",
    multiple=True,
    help="Name(s) clients use for the model (default: the model argument).",
)
@click.option(
    "--api-key",
    envvar="PAGODA_API_KEY",
    default=None,
    help="Require 'Authorization: Bearer KEY' on /v1 routes (env PAGODA_API_KEY).",
)
@click.option(
    "--chat-template", default=None, help="Chat template: a file path or an inline Jinja template."
)
@click.option(
    "--allowed-origins",
    default='["*"]',
    show_default=True,
    help="CORS origins: a JSON list or comma-separated.",
)
@click.option("--disable-log-requests", is_flag=True, help="Do not log each request.")
@click.option(
    "--max-log-len",
    type=int,
    default=None,
    help="Log at most this many prompt characters per request.",
)
@click.option(
    "--max-request-body-bytes",
    type=int,
    default=32 << 20,
    show_default=True,
    help="Larger request bodies get a 413.",
)
@click.option(
    "--enable-auto-tool-choice",
    is_flag=True,
    help='Let the model decide to call tools (tool_choice "auto"); needs --tool-call-parser.',
)
@click.option(
    "--tool-call-parser",
    default=None,
    help="Parser of the model's tool calls (hermes, llama3_json, mistral, pythonic, ...).",
)
@click.option(
    "--tool-parser-plugin",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="A Python file registering more tool parsers (repeatable).",
)
@click.option(
    "--enable-reasoning",
    is_flag=True,
    help="Accepted for compatibility: --reasoning-parser alone enables reasoning outputs.",
)
@click.option(
    "--reasoning-parser",
    default=None,
    help="Splits reasoning from content (deepseek_r1, qwen3, granite, mistral, ...).",
)
@click.option(
    "--reasoning-parser-plugin",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="A Python file registering more reasoning parsers (repeatable).",
)
def serve(**kwargs: Any) -> None:
    """Serve a model over the OpenAI HTTP API (default: SmolLM2 on http://127.0.0.1:8000)."""
    from pagoda.server import launch

    engine = pop_engine_kwargs(kwargs)
    try:
        config, options = launch.prepare(engine, kwargs)
    except (ValueError, FileNotFoundError) as exc:
        raise click.UsageError(str(exc)) from None
    launch.serve(config, options, kwargs["host"], kwargs["port"])
