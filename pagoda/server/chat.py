"""POST /v1/chat/completions."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from pagoda.outputs import CompletionOutput, PositionLogprobs, RequestOutput
from pagoda.server.errors import APIError
from pagoda.server.protocol import (
    ChatChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatLogprobEntry,
    ChatLogprobs,
    ChatResponseMessage,
    ChatStreamChoice,
    DeltaMessage,
    UsageInfo,
)
from pagoda.server.serving import build_params, check_length, parse_body, request_id, run_request
from pagoda.server.state import ServerState
from pagoda.server.streaming import open_stream, send_done, send_event


def render_chat(
    state: ServerState,
    messages: list[dict[str, Any]],
    *,
    add_generation_prompt: bool,
    continue_final_message: bool,
    chat_template: str | None,
    chat_template_kwargs: dict[str, Any] | None,
    add_special_tokens: bool,
) -> tuple[str, list[int]]:
    """The conversation rendered through the chat template, and its token ids."""
    tokenizer = state.tokenizer
    template = chat_template or state.options.chat_template
    try:
        text = tokenizer.apply_chat_template(
            messages,
            chat_template=template,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=continue_final_message,
            **(chat_template_kwargs or {}),
        )
    except Exception as exc:  # jinja errors, a template that rejects the roles ...
        raise APIError(400, f"the chat template failed: {exc}") from None
    return text, list(tokenizer.encode(text, add_special_tokens=add_special_tokens))


def _logprobs(positions: list[PositionLogprobs], token_ids: list[int], top: int) -> ChatLogprobs:
    entries = []
    for token_id, position in zip(token_ids, positions, strict=True):
        chosen = position[token_id]
        ranked = sorted(position.items(), key=lambda kv: kv[1].rank or 0)
        tops = [
            {
                "token": lp.decoded_token or "",
                "logprob": lp.logprob,
                "bytes": list((lp.decoded_token or "").encode()),
            }
            for tid, lp in ranked
            if tid != token_id or (lp.rank or 0) <= top
        ][:top]
        text = chosen.decoded_token or ""
        entries.append(
            ChatLogprobEntry(
                token=text, logprob=chosen.logprob, bytes=list(text.encode()), top_logprobs=tops
            )
        )
    return ChatLogprobs(content=entries)


def _choice_logprobs(req: ChatCompletionRequest, out: CompletionOutput) -> ChatLogprobs | None:
    if not req.logprobs or out.logprobs is None:
        return None
    return _logprobs(out.logprobs, out.token_ids, req.top_logprobs or 0)


async def create_chat_completion(request: web.Request) -> web.StreamResponse:
    state: ServerState = request.app["state"]
    req = await parse_body(request, ChatCompletionRequest)
    model = state.check_model(req.model)
    text, ids = render_chat(
        state,
        req.conversation(),
        add_generation_prompt=req.add_generation_prompt,
        continue_final_message=req.continue_final_message,
        chat_template=req.chat_template,
        chat_template_kwargs=req.chat_template_kwargs,
        add_special_tokens=req.add_special_tokens,
    )
    requested = req.max_completion_tokens or req.max_tokens
    max_tokens = check_length(state, len(ids), requested)
    logprobs = (req.top_logprobs or 0) if req.logprobs else None
    params = build_params(req, max_tokens, logprobs, req.stream)
    rid = request_id("chatcmpl", req)
    job = run_request(state, rid, {"prompt": text, "prompt_token_ids": ids}, params)
    if req.stream:
        return await _stream(request, req, model, rid, job)
    final: RequestOutput | None = None
    async for output in job:
        final = output
    assert final is not None
    choices = [
        ChatChoice(
            index=o.index,
            message=ChatResponseMessage(content=o.text),
            logprobs=_choice_logprobs(req, o),
            finish_reason=o.finish_reason,
            stop_reason=o.stop_reason,
        )
        for o in final.outputs
    ]
    completion = sum(len(o.token_ids) for o in final.outputs)
    usage = UsageInfo(
        prompt_tokens=len(ids), completion_tokens=completion, total_tokens=len(ids) + completion
    )
    body = ChatCompletionResponse(id=rid, model=model, choices=choices, usage=usage)
    return web.json_response(text=body.model_dump_json())


async def _stream(
    request: web.Request, req: ChatCompletionRequest, model: str, rid: str, job: Any
) -> web.StreamResponse:
    """OpenAI's chunk order: a role chunk per choice, content deltas, a finish chunk per
    choice, an optional usage chunk, then ``[DONE]``."""
    iterator = job.__aiter__()
    try:
        first = await iterator.__anext__()  # validation errors surface before streaming
    except StopAsyncIteration:
        first = None
    response = await open_stream(request)
    prompt_tokens = len(first.prompt_token_ids) if first is not None else 0
    completion_tokens = 0
    for i in range(req.n):
        await send_event(
            response,
            ChatCompletionChunk(
                id=rid,
                model=model,
                choices=[
                    ChatStreamChoice(index=i, delta=DeltaMessage(role="assistant", content=""))
                ],
            ),
        )
    finished: set[int] = set()
    output = first
    try:
        while output is not None:
            for o in output.outputs:
                completion_tokens += len(o.token_ids)
                if o.index in finished or not (o.text or o.finish_reason or o.token_ids):
                    continue
                if o.text or o.token_ids:
                    await send_event(
                        response,
                        ChatCompletionChunk(
                            id=rid,
                            model=model,
                            choices=[
                                ChatStreamChoice(
                                    index=o.index,
                                    delta=DeltaMessage(content=o.text),
                                    logprobs=_choice_logprobs(req, o),
                                )
                            ],
                        ),
                    )
                if o.finish_reason is not None:
                    finished.add(o.index)
                    await send_event(
                        response,
                        ChatCompletionChunk(
                            id=rid,
                            model=model,
                            choices=[
                                ChatStreamChoice(
                                    index=o.index,
                                    delta=DeltaMessage(),
                                    finish_reason=o.finish_reason,
                                    stop_reason=o.stop_reason,
                                )
                            ],
                        ),
                    )
            try:
                output = await iterator.__anext__()
            except StopAsyncIteration:
                output = None
    except (ConnectionResetError, asyncio.CancelledError):
        await iterator.aclose()
        raise
    if req.stream_options and req.stream_options.include_usage:
        usage = UsageInfo(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )
        await send_event(
            response, ChatCompletionChunk(id=rid, model=model, choices=[], usage=usage)
        )
    await send_done(response)
    return response
