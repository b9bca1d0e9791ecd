"""The aiohttp application: routes, middlewares (errors, auth, CORS), engine lifecycle."""

from __future__ import annotations

import asyncio
import hmac
import logging
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from pagoda.config import EngineConfig
from pagoda.core.async_engine import AsyncLLMEngine
from pagoda.server import chat, completions, models, pooling, tokenize
from pagoda.server.errors import APIError, error_response, too_large
from pagoda.server.metrics import ServerMetrics
from pagoda.server.openapi import build_openapi
from pagoda.server.state import ServerOptions, ServerState

logger = logging.getLogger("pagoda.server")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as OpenAI's error envelope; nothing crashes the server."""
    try:
        return await handler(request)
    except APIError as exc:
        return error_response(exc.status, exc.message, exc.param)
    except web.HTTPRequestEntityTooLarge:
        exc = too_large(request)
        return error_response(exc.status, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, f"{exc.reason}: {request.method} {request.path}")
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception as exc:
        logger.exception("error while serving %s", request.path)
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}")


def auth_middleware(api_key: str | None) -> Any:
    expected = f"Bearer {api_key}".encode() if api_key else None

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is not None and request.path.startswith("/v1") and request.method != "OPTIONS":
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return error_response(401, "missing or invalid API key")
        return await handler(request)

    return check


def cors_middleware(origins: list[str]) -> Any:
    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        allowed = origin is not None and ("*" in origins or origin in origins)
        if request.method == "OPTIONS" and allowed:
            response: web.StreamResponse = web.Response(status=204)
        else:
            response = await handler(request)
        if allowed and not response.prepared:
            response.headers["Access-Control-Allow-Origin"] = "*" if "*" in origins else origin
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
        return response

    return cors


def create_app(
    options: ServerOptions, engine_factory: Callable[[], AsyncLLMEngine]
) -> web.Application:
    """The app; the engine is built on a background thread after start-up (503 until then).
    If it fails to load, the app stops: ``web.run_app`` returns, and :func:`run_server` exits
    with status 1."""
    state = ServerState(
        options=options,
        metrics=ServerMetrics(
            options.served_model_names[0],
            lambda: state.engine.stats() if state.engine is not None else None,
        ),
    )
    middlewares = [error_middleware, auth_middleware(options.api_key)]
    if options.allowed_origins:
        middlewares.insert(0, cors_middleware(options.allowed_origins))
    app = web.Application(middlewares=middlewares, client_max_size=options.max_request_bytes)
    app["state"] = state
    openapi = build_openapi()
    app.router.add_get("/health", models.health)
    app.router.add_get("/version", models.version)
    app.router.add_get("/metrics", models.metrics)
    app.router.add_get("/v1/models", models.list_models)
    app.router.add_post("/v1/completions", completions.create_completion)
    app.router.add_post("/v1/chat/completions", chat.create_chat_completion)
    app.router.add_post("/tokenize", tokenize.tokenize)
    app.router.add_post("/detokenize", tokenize.detokenize)
    pooling.add_routes(app)

    async def openapi_json(request: web.Request) -> web.Response:
        return web.json_response(openapi)

    app.router.add_get("/openapi.json", openapi_json)

    async def load_engine(app: web.Application) -> None:
        loop = asyncio.get_running_loop()

        def build() -> None:
            try:
                engine = engine_factory()
                engine.start()
                state.engine = engine
                logger.info("model loaded; serving %s", ", ".join(options.served_model_names))
            except BaseException as exc:
                logger.exception("the model failed to load")
                state.load_error = exc
                loop.call_soon_threadsafe(_stop_serving)

        threading.Thread(target=build, name="pagoda-load", daemon=True).start()

    async def stop_engine(app: web.Application) -> None:
        if state.engine is not None:
            await asyncio.get_running_loop().run_in_executor(None, state.engine.shutdown)

    app.on_startup.append(load_engine)
    app.on_cleanup.append(stop_engine)
    return app


def _stop_serving() -> None:
    # Raised in the event loop, GracefulExit ends web.run_app as SIGTERM does.
    raise web.GracefulExit()


def run_server(config: EngineConfig, options: ServerOptions, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM: then stop accepting, let in-flight requests finish (up to
    30 s, the rest are aborted), stop the engine, and return (exit status 0). If the model
    fails to load, stop and exit with status 1, as vLLM does."""
    app = create_app(options, lambda: AsyncLLMEngine(config))
    web.run_app(
        app,
        host=host,
        port=port,
        shutdown_timeout=30,
        handler_cancellation=True,
        print=lambda msg: logger.info("%s", msg),
        access_log=None,
    )
    error = app["state"].load_error
    if error is not None:
        sys.exit(f"pagoda serve: the model failed to load: {error}")
