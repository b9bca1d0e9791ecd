"""GET /openapi.json: the routes, with request bodies described by the pydantic models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

import pagoda
from pagoda.server import protocol as p

# (method, path, summary, request model, response model)
ROUTES: list[tuple[str, str, str, type[BaseModel] | None, type[BaseModel] | None]] = [
    ("get", "/health", "200 once the model is loaded, 503 before", None, None),
    ("get", "/version", "The pagoda version", None, None),
    ("get", "/metrics", "Prometheus metrics", None, None),
    ("get", "/v1/models", "The served models", None, p.ModelList),
    ("post", "/v1/completions", "Text completion", p.CompletionRequest, p.CompletionResponse),
    (
        "post",
        "/v1/chat/completions",
        "Chat completion",
        p.ChatCompletionRequest,
        p.ChatCompletionResponse,
    ),
    (
        "post",
        "/tokenize",
        "Tokenize a prompt or chat messages",
        p.TokenizeCompletionRequest,
        p.TokenizeResponse,
    ),
    ("post", "/detokenize", "Token ids to text", p.DetokenizeRequest, p.DetokenizeResponse),
]


def build_openapi() -> dict[str, Any]:
    models = {m for _, _, _, req, resp in ROUTES for m in (req, resp) if m is not None}
    models |= {p.TokenizeChatRequest, p.ErrorResponse}
    keys, schema = models_json_schema(
        [(m, "validation") for m in sorted(models, key=lambda m: m.__name__)],
        ref_template="#/components/schemas/{model}",
    )
    refs = {m: keys[(m, "validation")]["$ref"] for m in models}
    error = {
        "description": "Error",
        "content": {"application/json": {"schema": {"$ref": refs[p.ErrorResponse]}}},
    }
    paths: dict[str, Any] = {}
    for method, path, summary, req, resp in ROUTES:
        op: dict[str, Any] = {"summary": summary, "responses": {"200": {"description": "OK"}}}
        if resp is not None:
            op["responses"]["200"]["content"] = {
                "application/json": {"schema": {"$ref": refs[resp]}}
            }
        if req is not None:
            body = {"$ref": refs[req]}
            if req is p.TokenizeCompletionRequest:
                body = {"oneOf": [body, {"$ref": refs[p.TokenizeChatRequest]}]}
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": body}},
            }
            op["responses"]["400"] = error
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "pagoda", "version": pagoda.__version__},
        "paths": paths,
        "components": {
            "schemas": schema.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
