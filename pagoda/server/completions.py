"""POST /v1/completions."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from pagoda.outputs import CompletionOutput, PositionLogprobs, RequestOutput
from pagoda.server.protocol import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    UsageInfo,
)
from pagoda.server.serving import build_params, check_length, parse_body, request_id, run_request
from pagoda.server.state import ServerState
from pagoda.server.streaming import open_stream, send_done, send_event


def _logprobs(
    positions: list[PositionLogprobs], token_ids: list[int], start_offset: int, tokenizer: Any
) -> CompletionLogprobs:
    out = CompletionLogprobs()
    offset = start_offset
    for token_id, position in zip(token_ids, positions, strict=True):
        chosen = position[token_id]
        text = (
            chosen.decoded_token
            if chosen.decoded_token is not None
            else tokenizer.decode([token_id])
        )
        out.tokens.append(text)
        out.token_logprobs.append(chosen.logprob)
        out.top_logprobs.append(
            {
                (lp.decoded_token or ""): lp.logprob
                for tid, lp in position.items()
                if tid != token_id or lp.rank == 1
            }
        )
        out.text_offset.append(offset)
        offset += len(text)
    return out


def _choice(
    state: ServerState,
    req: CompletionRequest,
    index: int,
    output: CompletionOutput,
    prompt_text: str,
) -> CompletionChoice:
    text = prompt_text + output.text
    logprobs = None
    if req.logprobs is not None and output.logprobs is not None:
        logprobs = _logprobs(output.logprobs, output.token_ids, len(prompt_text), state.tokenizer)
    return CompletionChoice(
        index=index,
        text=text,
        logprobs=logprobs,
        finish_reason=output.finish_reason,
        stop_reason=output.stop_reason,
    )


def _prepare(state: ServerState, req: CompletionRequest) -> list[dict[str, Any]]:
    tokenizer = state.tokenizer
    prompts = []
    for p in req.prompts():
        if isinstance(p, str):
            prompts.append({"prompt": p, "prompt_token_ids": list(tokenizer.encode(p))})
        else:
            prompts.append({"prompt": None, "prompt_token_ids": list(p)})
    return prompts


async def create_completion(request: web.Request) -> web.StreamResponse:
    state: ServerState = request.app["state"]
    req = await parse_body(request, CompletionRequest)
    model = state.check_model(req.model)
    prompts = _prepare(state, req)
    base_id = request_id("cmpl", req)
    jobs = []
    for i, prompt in enumerate(prompts):
        max_tokens = check_length(state, len(prompt["prompt_token_ids"]), req.max_tokens)
        params = build_params(req, max_tokens, req.logprobs, req.stream)
        rid = base_id if len(prompts) == 1 else f"{base_id}-{i}"
        jobs.append(run_request(state, rid, prompt, params))
    if req.stream:
        return await _stream(request, state, req, model, base_id, prompts, jobs)
    finals = await asyncio.gather(*(_last(job) for job in jobs))
    choices, prompt_tokens, completion_tokens = [], 0, 0
    for i, (prompt, final) in enumerate(zip(prompts, finals, strict=True)):
        prompt_tokens += len(final.prompt_token_ids)
        echo = _echo_text(state, prompt) if req.echo else ""
        for out in final.outputs:
            completion_tokens += len(out.token_ids)
            choices.append(_choice(state, req, i * req.n + out.index, out, echo))
    usage = UsageInfo(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )
    body = CompletionResponse(id=base_id, model=model, choices=choices, usage=usage)
    return web.json_response(text=body.model_dump_json())


def _echo_text(state: ServerState, prompt: dict[str, Any]) -> str:
    if prompt["prompt"] is not None:
        return prompt["prompt"]
    return state.tokenizer.decode(prompt["prompt_token_ids"])


async def _last(job: Any) -> RequestOutput:
    final = None
    async for output in job:
        final = output
    assert final is not None
    return final


async def _stream(
    request: web.Request,
    state: ServerState,
    req: CompletionRequest,
    model: str,
    base_id: str,
    prompts: list[dict[str, Any]],
    jobs: list[Any],
) -> web.StreamResponse:
    queue: asyncio.Queue[tuple[int, RequestOutput | BaseException | None]] = asyncio.Queue()

    async def pump(i: int, job: Any) -> None:
        try:
            async for output in job:
                await queue.put((i, output))
        except BaseException as exc:  # noqa: BLE001 - forwarded to the writer
            await queue.put((i, exc))
        finally:
            await queue.put((i, None))

    # Validation errors come before anything is streamed: start the requests, then open.
    tasks = [asyncio.create_task(pump(i, job)) for i, job in enumerate(jobs)]
    response = None
    counts = {"prompt": 0, "completion": 0}
    echoed: set[int] = set()
    try:
        remaining = len(jobs)
        while remaining:
            i, item = await queue.get()
            if item is None:
                remaining -= 1
                continue
            if isinstance(item, BaseException):
                raise item
            if response is None:
                response = await open_stream(request)
            await _send_output(
                state, req, model, base_id, response, i, item, prompts, echoed, counts
            )
        if response is None:
            response = await open_stream(request)
        if req.stream_options and req.stream_options.include_usage:
            usage = UsageInfo(
                prompt_tokens=counts["prompt"],
                completion_tokens=counts["completion"],
                total_tokens=counts["prompt"] + counts["completion"],
            )
            await send_event(
                response, CompletionResponse(id=base_id, model=model, choices=[], usage=usage)
            )
        await send_done(response)
        return response
    finally:
        for task in tasks:
            task.cancel()


async def _send_output(
    state: ServerState,
    req: CompletionRequest,
    model: str,
    base_id: str,
    response: web.StreamResponse,
    i: int,
    output: RequestOutput,
    prompts: list[dict[str, Any]],
    echoed: set[int],
    counts: dict[str, int],
) -> None:
    if output.finished:
        counts["prompt"] += len(output.prompt_token_ids)
    for out in output.outputs:
        index = i * req.n + out.index
        echo = ""
        if req.echo and index not in echoed:
            echoed.add(index)
            echo = _echo_text(state, prompts[i])
        counts["completion"] += len(out.token_ids)
        if not (echo or out.text or out.finish_reason or out.token_ids):
            continue
        choice = _choice(state, req, index, out, echo)
        await send_event(response, CompletionResponse(id=base_id, model=model, choices=[choice]))
