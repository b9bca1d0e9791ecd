"""The pooling APIs: POST /v1/embeddings (OpenAI), /pooling, /classify, /score and /v1/score,
/rerank, /v1/rerank and /v2/rerank (Jina / Cohere shapes), as vLLM serves them.

Each endpoint belongs to engine tasks; a request to one the server does not run is a 400
naming the ``--task`` to start with. All inputs of a request are submitted at once, so the
engine batches them (and other requests' inputs) in the same steps.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from typing import Any, Literal

import numpy as np
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from pagoda.pooling_params import PoolingParams, PoolingRequestOutput, cosine_similarity
from pagoda.server.errors import APIError
from pagoda.server.serving import parse_body
from pagoda.server.state import ServerState
from pagoda.tasks import is_matryoshka

Input = str | list[str] | list[int] | list[list[int]]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    user: str | None = None
    truncate_prompt_tokens: int | None = Field(default=None, ge=-1)
    request_id: str | None = None


class EmbeddingRequest(_Request):
    input: Input
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    normalize: bool | None = None


class PoolingRequest(_Request):
    input: Input
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    normalize: bool | None = None
    softmax: bool | None = None
    activation: bool | None = None


class ClassificationRequest(_Request):
    input: Input
    activation: bool | None = None


class ScoreRequest(_Request):
    text_1: str | list[str]
    text_2: str | list[str]
    activation: bool | None = None


class RerankRequest(_Request):
    query: str
    documents: list[str | dict[str, Any]]
    top_n: int | None = Field(default=None, ge=0)
    return_documents: bool = True
    activation: bool | None = None


# endpoint family -> (engine tasks that serve it, the task to start with)
_ENDPOINT_TASKS = {
    "Embeddings": (("embed",), "embed"),
    "Pooling": (("embed", "classify", "score", "reward"), "embed"),
    "Classification": (("classify",), "classify"),
    "Score": (("score", "embed"), "score"),
    "Rerank": (("score", "embed"), "score"),
}


def _engine_task(state: ServerState, api: str) -> str:
    task = state.ready_engine().config.model.task
    tasks, start_with = _ENDPOINT_TASKS[api]
    if task not in tasks:
        raise APIError(
            400,
            f"The model does not support the {api} API: this server runs the {task!r} task; "
            f"start it with --task {start_with}",
        )
    return task


def _prompts(value: Input) -> list[dict[str, Any] | str]:
    """An OpenAI ``input``: a string, strings, token ids, or lists of token ids."""
    if isinstance(value, str):
        items: list[Any] = [value]
    elif value and all(isinstance(x, int) for x in value):
        items = [value]
    else:
        items = list(value)
    if not items:
        raise APIError(400, "input must not be empty", param="input")
    prompts: list[dict[str, Any] | str] = []
    for item in items:
        if isinstance(item, str):
            if not item:
                raise APIError(400, "input must not contain empty strings", param="input")
            prompts.append(item)
        else:
            if not item:
                raise APIError(400, "input must not contain empty token lists", param="input")
            prompts.append({"prompt_token_ids": list(item)})
    return prompts


async def _run_all(
    state: ServerState, prefix: str, prompts: list[Any], params: PoolingParams
) -> list[PoolingRequestOutput]:
    """Submit every prompt at once; the finished outputs in order (engine errors -> 400)."""
    engine = state.ready_engine()
    base = f"{prefix}-{uuid.uuid4().hex}"

    async def one(i: int, prompt: Any) -> PoolingRequestOutput:
        async for output in engine.generate(prompt, params, f"{base}-{i}"):  # type: ignore[arg-type]
            if output.finished:
                return output  # type: ignore[return-value]
        raise RuntimeError("the engine ended a request without a result")

    try:
        return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts))))
    except (ValueError, TypeError) as exc:
        raise APIError(400, str(exc)) from None


def _envelope(prefix: str, model: str, data: list[Any], prompt_tokens: int) -> dict[str, Any]:
    return {
        "id": f"{prefix}-{uuid.uuid4().hex}",
        "object": "list",
        "created": int(time.time()),
        "model": model,
        "data": data,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "total_tokens": prompt_tokens,
            "completion_tokens": 0,
            "prompt_tokens_details": None,
        },
    }


def _encode(values: Any, encoding_format: str) -> Any:
    if encoding_format == "base64":
        array = np.asarray(values.float().numpy(), dtype="<f4")
        return base64.b64encode(array.tobytes()).decode()
    return values.tolist()


def _check_dimensions(state: ServerState, dimensions: int | None) -> None:
    if dimensions is None:
        return
    hf_config = state.ready_engine().config.model.hf_config
    if not is_matryoshka(hf_config):
        raise APIError(
            400,
            "Model does not support matryoshka representation, "
            "changing output dimensions will lead to poor results.",
            param="dimensions",
        )
    hidden = int(getattr(hf_config, "hidden_size", dimensions))
    if dimensions > hidden:
        raise APIError(
            400, f"dimensions must be at most {hidden}, got {dimensions}", param="dimensions"
        )


async def create_embedding(request: web.Request) -> web.Response:
    state: ServerState = request.app["state"]
    req = await parse_body(request, EmbeddingRequest)
    model = state.check_model(req.model)
    _engine_task(state, "Embeddings")
    _check_dimensions(state, req.dimensions)
    params = PoolingParams(
        dimensions=req.dimensions,
        normalize=req.normalize,
        truncate_prompt_tokens=req.truncate_prompt_tokens,
        task="embed",
    )
    outputs = await _run_all(state, "embd", _prompts(req.input), params)
    data = [
        {
            "index": i,
            "object": "embedding",
            "embedding": _encode(o.outputs.data, req.encoding_format),
        }
        for i, o in enumerate(outputs)
    ]
    tokens = sum(o.num_prompt_tokens for o in outputs)
    return web.json_response(_envelope("embd", model, data, tokens))


async def create_pooling(request: web.Request) -> web.Response:
    state: ServerState = request.app["state"]
    req = await parse_body(request, PoolingRequest)
    model = state.check_model(req.model)
    _engine_task(state, "Pooling")
    _check_dimensions(state, req.dimensions)
    params = PoolingParams(
        dimensions=req.dimensions,
        normalize=req.normalize,
        softmax=req.softmax,
        activation=req.activation,
        truncate_prompt_tokens=req.truncate_prompt_tokens,
    )
    outputs = await _run_all(state, "pool", _prompts(req.input), params)
    data = [
        {"index": i, "object": "pooling", "data": _encode(o.outputs.data, req.encoding_format)}
        for i, o in enumerate(outputs)
    ]
    tokens = sum(o.num_prompt_tokens for o in outputs)
    return web.json_response(_envelope("pool", model, data, tokens))


async def create_classify(request: web.Request) -> web.Response:
    state: ServerState = request.app["state"]
    req = await parse_body(request, ClassificationRequest)
    model = state.check_model(req.model)
    _engine_task(state, "Classification")
    params = PoolingParams(
        activation=req.activation, truncate_prompt_tokens=req.truncate_prompt_tokens
    )
    outputs = await _run_all(state, "classify", _prompts(req.input), params)
    id2label = getattr(state.ready_engine().config.model.hf_config, "id2label", None) or {}
    data = []
    for i, o in enumerate(outputs):
        probs = o.outputs.probs
        best = max(range(len(probs)), key=probs.__getitem__)
        label = id2label.get(best, id2label.get(str(best), f"LABEL_{best}"))
        data.append({"index": i, "label": label, "probs": probs, "num_classes": len(probs)})
    tokens = sum(o.num_prompt_tokens for o in outputs)
    return web.json_response(_envelope("classify", model, data, tokens))


async def _scores(
    state: ServerState,
    pairs: list[tuple[str, str]],
    truncate: int | None,
    activation: bool | None,
) -> tuple[list[float], int]:
    """Each pair's relevance score and the prompt tokens used: a cross-encoder reads each
    pair together; an embedding model scores the cosine similarity of the two embeddings."""
    if not pairs:
        raise APIError(400, "there is nothing to score: the inputs are empty")
    if any(not a or not b for a, b in pairs):
        raise APIError(400, "texts to score must not be empty")
    task = state.ready_engine().config.model.task
    if task == "score":
        params = PoolingParams(activation=activation, truncate_prompt_tokens=truncate, task="score")
        prompts = [{"text": a, "text_pair": b} for a, b in pairs]
        outputs = await _run_all(state, "score", prompts, params)
        return [o.outputs.score for o in outputs], sum(o.num_prompt_tokens for o in outputs)
    texts = list(dict.fromkeys(t for pair in pairs for t in pair))
    params = PoolingParams(truncate_prompt_tokens=truncate, task="embed")
    outputs = await _run_all(state, "score", texts, params)
    by_text = dict(zip(texts, outputs, strict=True))
    scores = [
        float(cosine_similarity(by_text[a].outputs.data, by_text[b].outputs.data)[0])
        for a, b in pairs
    ]
    return scores, sum(o.num_prompt_tokens for o in outputs)


async def create_score(request: web.Request) -> web.Response:
    state: ServerState = request.app["state"]
    req = await parse_body(request, ScoreRequest)
    model = state.check_model(req.model)
    _engine_task(state, "Score")
    from pagoda.pooling_params import score_pairs

    try:
        pairs = score_pairs(req.text_1, req.text_2)
    except ValueError as exc:
        raise APIError(400, str(exc)) from None
    scores, tokens = await _scores(state, pairs, req.truncate_prompt_tokens, req.activation)
    data = [{"index": i, "object": "score", "score": s} for i, s in enumerate(scores)]
    return web.json_response(_envelope("score", model, data, tokens))


async def create_rerank(request: web.Request) -> web.Response:
    state: ServerState = request.app["state"]
    req = await parse_body(request, RerankRequest)
    model = state.check_model(req.model)
    _engine_task(state, "Rerank")
    docs = [d if isinstance(d, str) else str(d.get("text", "")) for d in req.documents]
    if not docs:
        raise APIError(400, "documents must not be empty", param="documents")
    pairs = [(req.query, d) for d in docs]
    scores, tokens = await _scores(state, pairs, req.truncate_prompt_tokens, req.activation)
    order = sorted(range(len(docs)), key=lambda i: scores[i], reverse=True)
    if req.top_n:
        order = order[: req.top_n]
    results = []
    for i in order:
        result: dict[str, Any] = {"index": i, "relevance_score": scores[i]}
        if req.return_documents:
            result["document"] = {"text": docs[i]}
        results.append(result)
    return web.json_response(
        {
            "id": f"rerank-{uuid.uuid4().hex}",
            "model": model,
            "usage": {"total_tokens": tokens},
            "results": results,
        }
    )


def add_routes(app: web.Application) -> None:
    """Register every pooling endpoint (vLLM's paths)."""
    app.router.add_post("/v1/embeddings", create_embedding)
    app.router.add_post("/pooling", create_pooling)
    app.router.add_post("/classify", create_classify)
    for path in ("/score", "/v1/score"):
        app.router.add_post(path, create_score)
    for path in ("/rerank", "/v1/rerank", "/v2/rerank"):
        app.router.add_post(path, create_rerank)
