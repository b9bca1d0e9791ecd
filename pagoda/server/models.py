"""GET /v1/models, /health, /version, /metrics."""

from __future__ import annotations

from aiohttp import web

import pagoda
from pagoda.server.protocol import ModelCard, ModelList
from pagoda.server.state import ServerState


async def list_models(request: web.Request) -> web.Response:
    state: ServerState = request.app["state"]
    engine = state.ready_engine()
    root = engine.config.model.model
    cards = [
        ModelCard(id=name, root=root, max_model_len=state.max_model_len, created=int(state.started))
        for name in state.options.served_model_names
    ]
    return web.json_response(text=ModelList(data=cards).model_dump_json())


async def health(request: web.Request) -> web.Response:
    state: ServerState = request.app["state"]
    state.ready_engine()
    return web.Response(status=200)


async def version(request: web.Request) -> web.Response:
    return web.json_response({"version": pagoda.__version__})


async def metrics(request: web.Request) -> web.Response:
    state: ServerState = request.app["state"]
    return web.Response(
        body=state.metrics.render(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )
