"""``pagoda serve``: turn the command line into an engine config and server options."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pagoda.config import EngineConfig
from pagoda.interfaces.reasoning import ReasoningParser
from pagoda.interfaces.tool_parser import ToolParser
from pagoda.plugin_manager import get_plugin_manager
from pagoda.server.app import run_server
from pagoda.server.state import ServerOptions


def _origins(text: str) -> list[str]:
    text = text.strip()
    if text.startswith("["):
        return [str(x) for x in json.loads(text)]
    return [x.strip() for x in text.split(",") if x.strip()]


#: The chat templates installed with the package (``examples/`` in a source checkout).
PACKAGED_TEMPLATES = Path(__file__).resolve().parent.parent / "examples"


def _chat_template(value: str | None) -> str | None:
    """A file's contents, or the value itself as an inline template. A path that does not
    exist but names a template shipped with pagoda (``examples/tool_chat_template_*.jinja``
    from any directory) reads the installed copy."""
    if value is None:
        return None
    packaged = PACKAGED_TEMPLATES / Path(value).name
    for path in (Path(value), packaged):
        if path.is_file():
            return path.read_text()
    if "{" not in value:
        raise ValueError(f"--chat-template {value!r} is neither a file nor a Jinja template")
    return value


def resolve_parsers(
    opts: dict[str, Any],
) -> tuple[type[ToolParser] | None, type[ReasoningParser] | None]:
    """The classes ``--tool-call-parser`` and ``--reasoning-parser`` name, after loading the
    ``--*-parser-plugin`` files (whose parsers then resolve like built-ins). Raises
    ValueError for an unknown name (listing the known ones) or an incomplete flag set."""
    pm = get_plugin_manager()
    for path in (*opts.get("tool_parser_plugin", ()), *opts.get("reasoning_parser_plugin", ())):
        pm.register_file(path)
    tool_name, reasoning_name = opts.get("tool_call_parser"), opts.get("reasoning_parser")
    if opts.get("enable_auto_tool_choice") and not tool_name:
        raise ValueError("--enable-auto-tool-choice needs --tool-call-parser NAME")
    if opts.get("enable_reasoning") and not reasoning_name:
        raise ValueError("--enable-reasoning needs --reasoning-parser NAME")
    tool_parser = _parser_class(pm.tool_parsers.get(tool_name), ToolParser) if tool_name else None
    reasoning_parser = (
        _parser_class(pm.reasoning_parsers.get(reasoning_name), ReasoningParser)
        if reasoning_name
        else None
    )
    return tool_parser, reasoning_parser


def _parser_class(value: Any, base: type) -> Any:
    if not (isinstance(value, type) and issubclass(value, base)):
        raise ValueError(f"{value!r} is not a subclass of {base.__module__}.{base.__name__}")
    return value


def prepare(
    engine_kwargs: dict[str, Any], opts: dict[str, Any]
) -> tuple[EngineConfig, ServerOptions]:
    """The engine config (finalized: the model found, its config read) and server options of
    ``pagoda serve``'s flags, checked before anything loads (ValueError / FileNotFoundError
    for a bad flag)."""
    config = EngineConfig.from_kwargs(**engine_kwargs).finalize()
    names = list(opts["served_model_name"]) or [engine_kwargs["model"]]
    tool_parser, reasoning_parser = resolve_parsers(opts)
    config.decoding.reasoning_parser = opts.get("reasoning_parser")
    options = ServerOptions(
        served_model_names=names,
        api_key=opts["api_key"] or None,
        chat_template=_chat_template(opts["chat_template"]),
        allowed_origins=_origins(opts["allowed_origins"]),
        disable_log_requests=opts["disable_log_requests"],
        max_log_len=opts["max_log_len"],
        max_request_bytes=opts["max_request_body_bytes"],
        enable_auto_tool_choice=opts["enable_auto_tool_choice"],
        tool_parser=tool_parser,
        reasoning_parser=reasoning_parser,
    )
    return config, options


def serve(config: EngineConfig, options: ServerOptions, host: str, port: int) -> None:
    """Run the server until SIGINT/SIGTERM, logging at INFO."""
    logging.getLogger("pagoda").setLevel(logging.INFO)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run_server(config, options, host, port)
