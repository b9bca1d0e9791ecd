"""POST /tokenize and POST /detokenize (vLLM's shapes)."""

from __future__ import annotations

from aiohttp import web
from pydantic import ValidationError

from pagoda.server.chat import render_chat
from pagoda.server.errors import APIError, from_validation_error, read_json
from pagoda.server.protocol import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeChatRequest,
    TokenizeCompletionRequest,
    TokenizeResponse,
)
from pagoda.server.serving import parse_body
from pagoda.server.state import ServerState


async def tokenize(request: web.Request) -> web.Response:
    state: ServerState = request.app["state"]
    body = await read_json(request)
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    try:
        if "messages" in body:
            chat = TokenizeChatRequest.model_validate(body)
            state.check_model(chat.model)
            _, ids = render_chat(
                state,
                [m.as_template_dict() for m in chat.messages],
                add_generation_prompt=chat.add_generation_prompt,
                continue_final_message=chat.continue_final_message,
                chat_template=chat.chat_template,
                chat_template_kwargs=chat.chat_template_kwargs,
                add_special_tokens=chat.add_special_tokens,
                tools=[t.model_dump(exclude_none=True) for t in chat.tools or []] or None,
            )
            want_strs = chat.return_token_strs
        else:
            req = TokenizeCompletionRequest.model_validate(body)
            state.check_model(req.model)
            ids = list(
                state.tokenizer.encode(req.prompt, add_special_tokens=req.add_special_tokens)
            )
            want_strs = req.return_token_strs
    except ValidationError as exc:
        raise from_validation_error(exc) from None
    strs = state.tokenizer.convert_ids_to_tokens(ids) if want_strs else None
    out = TokenizeResponse(
        count=len(ids), max_model_len=state.max_model_len, tokens=ids, token_strs=strs
    )
    return web.json_response(text=out.model_dump_json())


async def detokenize(request: web.Request) -> web.Response:
    state: ServerState = request.app["state"]
    req = await parse_body(request, DetokenizeRequest)
    state.check_model(req.model)
    vocab = len(state.tokenizer)
    bad = [t for t in req.tokens if not 0 <= t < vocab]
    if bad:
        raise APIError(
            400, f"token id {bad[0]} is outside the vocabulary (size {vocab})", param="tokens"
        )
    text = state.tokenizer.decode(req.tokens)
    return web.json_response(text=DetokenizeResponse(prompt=text).model_dump_json())
