"""What completions and chat share: parsing, sampling params, running requests, logging."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from pagoda.outputs import RequestOutput
from pagoda.sampling_params import RequestOutputKind, SamplingParams
from pagoda.server.errors import APIError, from_validation_error, read_json
from pagoda.server.protocol import SamplingFields
from pagoda.server.state import ServerState

logger = logging.getLogger("pagoda.server")
M = TypeVar("M", bound=BaseModel)


async def parse_body(request: web.Request, model: type[M]) -> M:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise from_validation_error(exc) from None


def build_params(
    req: SamplingFields, max_tokens: int | None, logprobs: int | None, stream: bool
) -> SamplingParams:
    try:
        params = req.sampling_params(max_tokens, logprobs)
    except ValueError as exc:
        raise APIError(400, str(exc)) from None
    params.output_kind = RequestOutputKind.DELTA if stream else RequestOutputKind.FINAL_ONLY
    return params


def check_length(state: ServerState, prompt_len: int, max_tokens: int | None) -> int:
    """The max_tokens to use; 400 when the prompt (plus max_tokens) exceeds the context."""
    limit = state.max_model_len
    if prompt_len >= limit:
        raise APIError(
            400,
            f"This model's maximum context length is {limit} tokens. However, "
            f"your request has {prompt_len} input tokens.",
            param="messages",
        )
    if max_tokens is None:
        return limit - prompt_len
    if prompt_len + max_tokens > limit:
        raise APIError(
            400,
            f"This model's maximum context length is {limit} tokens. However, "
            f"you requested {prompt_len + max_tokens} tokens ({prompt_len} in "
            f"the messages, {max_tokens} in the completion).",
            param="max_tokens",
        )
    return max_tokens


def request_id(prefix: str, req: SamplingFields) -> str:
    return req.request_id or f"{prefix}-{uuid.uuid4().hex}"


def log_request(
    state: ServerState, rid: str, prompt_ids: list[int], prompt: str | None, params: SamplingParams
) -> None:
    if state.options.disable_log_requests:
        return
    text = prompt or ""
    if state.options.max_log_len is not None:
        text = text[: state.options.max_log_len]
    logger.info(
        "Received request %s: prompt: %r, prompt_len: %d, params: %s",
        rid,
        text,
        len(prompt_ids),
        params,
    )


def log_finish(state: ServerState, rid: str, status: str) -> None:
    if not state.options.disable_log_requests:
        logger.info("Finished request %s: %s", rid, status)


async def run_request(
    state: ServerState, rid: str, prompt: dict[str, Any], params: SamplingParams
) -> AsyncIterator[RequestOutput]:
    """Stream a request's outputs; engine validation errors become 400s; the finished output
    is recorded in the metrics; the request is logged."""
    engine = state.ready_engine()
    log_request(state, rid, prompt.get("prompt_token_ids", []), prompt.get("prompt"), params)
    status = "aborted"
    try:
        if params.guided_decoding is not None:
            await engine.compile_guided(params.guided_decoding)
        async for output in engine.generate(prompt, params, rid):
            if output.finished:
                state.metrics.observe_finished(output)
                status = ",".join(o.finish_reason or "?" for o in output.outputs)
            yield output
    except (ValueError, TypeError) as exc:
        status = f"rejected: {exc}"
        raise APIError(400, str(exc)) from None
    finally:
        log_finish(state, rid, status)


def now() -> int:
    return int(time.time())
