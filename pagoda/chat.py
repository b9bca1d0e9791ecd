"""The interactive ``pagoda chat`` loop: streams each reply token by token."""

from __future__ import annotations

import copy
from typing import Any

import click

from pagoda.cli_options import build_llm
from pagoda.sampling_params import RequestOutputKind, SamplingParams


def run_chat(engine_kwargs: dict[str, Any], params: SamplingParams, system: str | None) -> None:
    llm = build_llm(engine_kwargs)
    params = copy.copy(params)
    params.output_kind = RequestOutputKind.DELTA
    engine = llm.llm_engine
    tokenizer = llm.get_tokenizer()
    messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    click.echo("Chatting with the model; an empty line or Ctrl-D quits.")
    turn = 0
    while True:
        try:
            user = input("> ")
        except EOFError:
            break
        if not user.strip():
            break
        messages.append({"role": "user", "content": user})
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tokenizer.encode(text, add_special_tokens=False)
        request_id = f"chat-{turn}"
        turn += 1
        engine.add_request(request_id, {"prompt": text, "prompt_token_ids": ids}, params)
        reply = ""
        finished = False
        while not finished:
            for out in engine.step():
                finished = out.finished
                reply += out.outputs[0].text
                click.echo(out.outputs[0].text, nl=False)
        click.echo()
        messages.append({"role": "assistant", "content": reply})
