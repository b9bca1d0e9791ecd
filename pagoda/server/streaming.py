"""Server-sent events, as OpenAI streams them: ``data: {json}\\n\\n`` ... ``data: [DONE]``."""

from __future__ import annotations

import json

from aiohttp import web
from pydantic import BaseModel


async def open_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    return response


async def send_event(response: web.StreamResponse, payload: BaseModel | dict) -> None:
    data = payload.model_dump_json() if isinstance(payload, BaseModel) else json.dumps(payload)
    await response.write(f"data: {data}\n\n".encode())


async def send_done(response: web.StreamResponse) -> None:
    await response.write(b"data: [DONE]\n\n")
