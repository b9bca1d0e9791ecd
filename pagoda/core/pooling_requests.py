"""The engine side of pooling requests: tokenize (pairs and truncation included), check the
task, build the Request, and turn a pooled result into a ``PoolingRequestOutput``."""

from __future__ import annotations

from typing import Any

from pagoda.core.pooler import PoolingState
from pagoda.core.request import Request
from pagoda.pooling_params import PoolingOutput, PoolingParams, PoolingRequestOutput
from pagoda.sampling_params import SamplingParams

# Pooling requests sample nothing; Request still wants sampling params (no logprobs).
_NO_SAMPLING = SamplingParams(max_tokens=1)


def check_task(engine_task: str, params: PoolingParams) -> str:
    """The request's task; a ValueError naming the task to start with when the engine runs
    another one."""
    task = params.task or engine_task
    if engine_task == "generate":
        raise ValueError(
            f"this server runs the 'generate' task; start it with --task {task} "
            f"to serve {task} requests"
        )
    if task != engine_task:
        raise ValueError(
            f"this server runs the {engine_task!r} task; start it with --task {task} "
            f"to serve {task} requests"
        )
    return task


def tokenize_pooling_prompt(
    tokenizer: Any, prompt: Any, truncate: int | None, max_model_len: int
) -> tuple[str | None, list[int], list[int] | None]:
    """(text, token ids, token type ids or None) of a pooling prompt: a string,
    ``{"prompt": str}``, ``{"prompt_token_ids": [...], "token_type_ids": [...]}`` or a text
    pair ``{"text": str, "text_pair": str}`` (a cross-encoder's input). With ``truncate``
    (-1: the context length) text is cut by the tokenizer (keeping its special tokens) and
    token ids keep their last ``truncate``."""
    limit = max_model_len if truncate == -1 else truncate
    if isinstance(prompt, dict) and "prompt_token_ids" in prompt:
        ids = [int(t) for t in prompt["prompt_token_ids"]]
        types = prompt.get("token_type_ids")
        types = [int(t) for t in types] if types is not None else None
        if limit is not None and len(ids) > limit:
            ids = ids[-limit:]
            types = types[-limit:] if types is not None else None
        return prompt.get("prompt"), ids, types
    if isinstance(prompt, str):
        text, pair = prompt, None
    elif isinstance(prompt, dict) and "text_pair" in prompt:
        text, pair = prompt["text"], prompt["text_pair"]
    elif isinstance(prompt, dict) and "prompt" in prompt:
        text, pair = prompt["prompt"], None
    else:
        raise TypeError(
            "a pooling prompt is a string, {'prompt': str}, {'prompt_token_ids': [int, ...]} "
            f"or {{'text': str, 'text_pair': str}}, not {type(prompt).__name__}"
        )
    kwargs: dict[str, Any] = {}
    if limit is not None:
        kwargs = {"truncation": True, "max_length": limit}
    enc = tokenizer(text, pair, **kwargs) if pair is not None else tokenizer(text, **kwargs)
    ids = list(enc["input_ids"])
    if not text and (pair is None or not pair):
        ids = []  # an empty input is an error, not a lone [CLS] [SEP]
    types = enc.get("token_type_ids")
    return text, ids, list(types) if types is not None and pair is not None else None


def make_pooling_request(
    request_id: str,
    text: str | None,
    token_ids: list[int],
    token_type_ids: list[int] | None,
    params: PoolingParams,
    task: str,
    arrival: float,
    max_model_len: int,
) -> Request:
    return Request(
        request_id,
        token_ids,
        _NO_SAMPLING,
        frozenset(),
        arrival,
        max_model_len,
        prompt=text,
        pooling=PoolingState(params, task, token_type_ids),
    )


def pooling_output(request: Request, data: Any) -> PoolingRequestOutput:
    return PoolingRequestOutput(
        request_id=request.request_id,
        prompt_token_ids=request.prompt_token_ids,
        outputs=PoolingOutput(data),
        finished=True,
        prompt=request.prompt,
    )
