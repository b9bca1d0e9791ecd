"""POST /v1/chat/completions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web

from pagoda.interfaces.reasoning import ReasoningParser
from pagoda.interfaces.tool_parser import ToolParser
from pagoda.outputs import CompletionOutput, PositionLogprobs, RequestOutput
from pagoda.server.chat_output import ChatOutputParser
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
from pagoda.server.tool_choice import NamedToolCallParser, RequiredToolCallParser, constrain


def render_chat(
    state: ServerState,
    messages: list[dict[str, Any]],
    *,
    add_generation_prompt: bool,
    continue_final_message: bool,
    chat_template: str | None,
    chat_template_kwargs: dict[str, Any] | None,
    add_special_tokens: bool,
    tools: list[dict[str, Any]] | None = None,
) -> tuple[str, list[int]]:
    """The conversation rendered through the chat template, and its token ids."""
    tokenizer = state.tokenizer
    template = chat_template or state.options.chat_template
    try:
        text = tokenizer.apply_chat_template(
            messages,
            chat_template=template,
            tools=tools,
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


def output_parsers(
    state: ServerState, req: ChatCompletionRequest
) -> Callable[[], ChatOutputParser]:
    """A factory of per-choice output parsers for this request (parsers hold per-request
    state, so each choice gets its own), after letting the parsers adjust the request
    (e.g. keep special tokens in the text). 400 for a tool_choice the server cannot honour."""
    options = state.options
    choice = req.effective_tool_choice()
    if (
        choice == "auto"
        and req.tools
        and not (options.enable_auto_tool_choice and options.tool_parser is not None)
    ):
        if req.tool_choice is None:
            choice = "none"  # OpenAI's implicit default: render the tools, parse nothing
        else:
            raise APIError(
                400,
                'tool_choice "auto" needs the server to run with --enable-auto-tool-choice '
                "and --tool-call-parser",
                param="tool_choice",
            )
    tokenizer = state.tokenizer
    max_calls = 1 if req.parallel_tool_calls is False else None

    def tool_parser() -> ToolParser | None:
        if choice == "none":
            return None
        if choice == "auto":
            assert options.tool_parser is not None
            return options.tool_parser(tokenizer)
        if choice == "required":
            return RequiredToolCallParser(tokenizer)
        return NamedToolCallParser(tokenizer, choice.function.name)

    def reasoning_parser() -> ReasoningParser | None:
        return options.reasoning_parser(tokenizer) if options.reasoning_parser else None

    for parser in (reasoning_parser(), tool_parser()):
        if parser is not None:
            req = parser.adjust_request(req) or req

    def make() -> ChatOutputParser:
        return ChatOutputParser(req, reasoning_parser(), tool_parser(), max_calls)

    return make


def _finish_reason(reason: str | None, called_tools: bool) -> str | None:
    return "tool_calls" if called_tools and reason == "stop" else reason


async def create_chat_completion(request: web.Request) -> web.StreamResponse:
    state: ServerState = request.app["state"]
    req = await parse_body(request, ChatCompletionRequest)
    model = state.check_model(req.model)
    make_parser = output_parsers(state, req)
    text, ids = render_chat(
        state,
        req.conversation(),
        add_generation_prompt=req.add_generation_prompt,
        continue_final_message=req.continue_final_message,
        chat_template=req.chat_template,
        chat_template_kwargs=req.chat_template_kwargs,
        add_special_tokens=req.add_special_tokens,
        tools=req.tool_dicts(),
    )
    requested = req.max_completion_tokens or req.max_tokens
    max_tokens = check_length(state, len(ids), requested)
    logprobs = (req.top_logprobs or 0) if req.logprobs else None
    params = build_params(req, max_tokens, logprobs, req.stream)
    constrain(req, params)
    rid = request_id("chatcmpl", req)
    job = run_request(state, rid, {"prompt": text, "prompt_token_ids": ids}, params)
    if req.stream:
        return await _stream(request, req, model, rid, job, make_parser)
    final: RequestOutput | None = None
    async for output in job:
        final = output
    assert final is not None
    choices = []
    for o in final.outputs:
        parsed = make_parser().parse(o.text)
        choices.append(
            ChatChoice(
                index=o.index,
                message=ChatResponseMessage(
                    content=parsed.content,
                    reasoning_content=parsed.reasoning,
                    reasoning=parsed.reasoning,
                    tool_calls=parsed.tool_calls,
                ),
                logprobs=_choice_logprobs(req, o),
                finish_reason=_finish_reason(o.finish_reason, bool(parsed.tool_calls)),
                stop_reason=o.stop_reason,
            )
        )
    completion = sum(len(o.token_ids) for o in final.outputs)
    usage = UsageInfo(
        prompt_tokens=len(ids), completion_tokens=completion, total_tokens=len(ids) + completion
    )
    body = ChatCompletionResponse(id=rid, model=model, choices=choices, usage=usage)
    return web.json_response(text=body.model_dump_json())


def _chunk(rid: str, model: str, choice: ChatStreamChoice) -> ChatCompletionChunk:
    return ChatCompletionChunk(id=rid, model=model, choices=[choice])


async def _stream(
    request: web.Request,
    req: ChatCompletionRequest,
    model: str,
    rid: str,
    job: Any,
    make_parser: Callable[[], ChatOutputParser],
) -> web.StreamResponse:
    """OpenAI's chunk order: a role chunk per choice, deltas (reasoning before content, tool
    calls in OpenAI's delta format), a finish chunk per choice, an optional usage chunk,
    then ``[DONE]``."""
    iterator = job.__aiter__()
    try:
        first = await iterator.__anext__()  # validation errors surface before streaming
    except StopAsyncIteration:
        first = None
    response = await open_stream(request)
    prompt_tokens = len(first.prompt_token_ids) if first is not None else 0
    completion_tokens = 0
    parsers = [make_parser() for _ in range(req.n)]
    for i in range(req.n):
        delta = DeltaMessage(role="assistant", content="")
        await send_event(response, _chunk(rid, model, ChatStreamChoice(index=i, delta=delta)))
    finished: set[int] = set()
    output = first
    try:
        while output is not None:
            for o in output.outputs:
                completion_tokens += len(o.token_ids)
                if o.index in finished or not (o.text or o.finish_reason or o.token_ids):
                    continue
                parser = parsers[o.index]
                if parser.active:
                    delta = parser.step(o.text, o.token_ids, o.finish_reason is not None)
                elif o.text or o.token_ids:
                    delta = DeltaMessage(content=o.text)
                else:
                    delta = None
                logprobs = _choice_logprobs(req, o)
                if delta is not None or logprobs is not None:
                    choice = ChatStreamChoice(
                        index=o.index, delta=delta or DeltaMessage(), logprobs=logprobs
                    )
                    await send_event(response, _chunk(rid, model, choice))
                if o.finish_reason is not None:
                    finished.add(o.index)
                    choice = ChatStreamChoice(
                        index=o.index,
                        delta=DeltaMessage(),
                        finish_reason=_finish_reason(o.finish_reason, parser.called_tools),
                        stop_reason=o.stop_reason,
                    )
                    await send_event(response, _chunk(rid, model, choice))
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
