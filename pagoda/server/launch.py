"""``pagoda serve``: turn the command line into an engine config and server options."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from pagoda.config import EngineConfig
from pagoda.server.app import run_server
from pagoda.server.state import ServerOptions


def _origins(text: str) -> list[str]:
    text = text.strip()
    if text.startswith("["):
        return [str(x) for x in json.loads(text)]
    return [x.strip() for x in text.split(",") if x.strip()]


def _chat_template(value: str | None) -> str | None:
    """A file's contents, or the value itself as an inline template."""
    if value is None:
        return None
    if os.path.isfile(value):
        with open(value) as f:
            return f.read()
    if "{" not in value:
        raise ValueError(f"--chat-template {value!r} is neither a file nor a Jinja template")
    return value


def serve_from_cli(engine_kwargs: dict[str, Any], opts: dict[str, Any]) -> None:
    logging.getLogger("pagoda").setLevel(logging.INFO)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = EngineConfig.from_kwargs(**engine_kwargs)
    names = list(opts["served_model_name"]) or [engine_kwargs["model"]]
    options = ServerOptions(
        served_model_names=names,
        api_key=opts["api_key"] or None,
        chat_template=_chat_template(opts["chat_template"]),
        allowed_origins=_origins(opts["allowed_origins"]),
        disable_log_requests=opts["disable_log_requests"],
        max_log_len=opts["max_log_len"],
        max_request_bytes=opts["max_request_body_bytes"],
    )
    run_server(config, options, opts["host"], opts["port"])
