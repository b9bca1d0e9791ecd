"""OpenAI's error envelope: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from pydantic import ValidationError

_TYPES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    404: "NotFoundError",
    405: "MethodNotAllowedError",
    413: "RequestTooLargeError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
}


class APIError(Exception):
    """An error to send to the client with its HTTP status."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


def error_body(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": _TYPES.get(status, "Error"),
            "param": param,
            "code": status,
        }
    }


def error_response(status: int, message: str, param: str | None = None) -> web.Response:
    return web.json_response(error_body(status, message, param), status=status)


def from_validation_error(exc: ValidationError) -> APIError:
    """The first problem of a pydantic error, naming its field."""
    err = exc.errors()[0]
    loc = ".".join(str(x) for x in err.get("loc", ()) if not isinstance(x, int) or True)
    if err.get("type") == "extra_forbidden":
        return APIError(
            400,
            f"unknown field {loc!r}: it is neither an OpenAI nor a pagoda request field",
            param=loc,
        )
    message = err.get("msg", "invalid request")
    message = message.removeprefix("Value error, ")
    return APIError(400, f"{loc}: {message}" if loc else message, param=loc or None)


def too_large(request: web.Request) -> APIError:
    """The 413 for a body over the app's limit (aiohttp's exception does not keep the limit)."""
    limit = request.app["state"].options.max_request_bytes
    return APIError(413, f"request body too large (limit {limit} bytes)")


async def read_json(request: web.Request) -> Any:
    """The request body as JSON, or a 400 (malformed) / 413 (too large)."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large(request) from None
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise APIError(400, f"malformed JSON body: {exc}") from None
