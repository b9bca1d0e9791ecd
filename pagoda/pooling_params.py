"""Pooling requests and their outputs (embed, classify, score, reward, encode), as in vLLM.

``PoolingParams`` is what a caller sets per request; ``PoolerConfig`` is the engine-wide
default (``--override-pooler-config`` / ``--pooler-config``, or a Sentence-Transformers model
directory's ``modules.json`` + ``1_Pooling/config.json``). Outputs keep vLLM's accessors:
``outputs.embedding``, ``outputs.probs``, ``outputs.score`` and ``outputs.data``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any

#: Every task an engine can run; all but ``generate`` are pooling tasks.
TASKS = ("generate", "embed", "classify", "score", "reward")
POOLING_TASKS = ("embed", "classify", "score", "reward")
POOLING_TYPES = ("CLS", "LAST", "MEAN", "ALL")


@dataclass(slots=True)
class PoolerConfig:
    """How hidden states become a request's result; None fields take the task's default.

    ``pooling_type``: CLS (first token), LAST (last token), MEAN (average over the prompt)
    or ALL (every token). ``normalize``: L2-normalise the result (embed default: on).
    ``softmax`` / ``activation``: apply the classifier's softmax (or sigmoid for one label;
    classify and score default: on, reward: off)."""

    pooling_type: str | None = None
    normalize: bool | None = None
    softmax: bool | None = None
    activation: bool | None = None

    def __post_init__(self) -> None:
        if self.pooling_type is not None:
            self.pooling_type = self.pooling_type.upper()
            if self.pooling_type not in POOLING_TYPES:
                raise ValueError(
                    f"pooling_type must be one of {', '.join(POOLING_TYPES)}, "
                    f"got {self.pooling_type!r}"
                )

    @classmethod
    def parse(cls, value: PoolerConfig | dict[str, Any] | str | None) -> PoolerConfig | None:
        """From a PoolerConfig, a dict or a JSON string (the command line's form)."""
        if value is None or isinstance(value, PoolerConfig):
            return value
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"pooler config is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ValueError(f"pooler config must be a JSON object, got {value!r}")
        known = {f.name for f in fields(cls)}
        unknown = set(value) - known
        if unknown:
            raise ValueError(
                f"unknown pooler config keys {sorted(unknown)}; known: {sorted(known)}"
            )
        return cls(**value)

    def merged(self, other: PoolerConfig | None) -> PoolerConfig:
        """This config with every field ``other`` sets replaced."""
        if other is None:
            return self
        return PoolerConfig(
            **{
                f.name: getattr(other, f.name)
                if getattr(other, f.name) is not None
                else getattr(self, f.name)
                for f in fields(PoolerConfig)
            }
        )


@dataclass(slots=True)
class PoolingParams:
    """Per-request pooling options (vLLM's names).

    ``dimensions``: keep the first N embedding dimensions (Matryoshka models only), then
    normalise. ``normalize``, ``softmax``/``activation`` override the engine's pooler config.
    ``truncate_prompt_tokens``: keep at most N prompt tokens (-1: the model's context length);
    without it a prompt longer than the context is an error. ``task`` is set by the caller's
    method (``LLM.embed`` -> "embed" ...); None means the engine's task."""

    dimensions: int | None = None
    normalize: bool | None = None
    softmax: bool | None = None
    activation: bool | None = None
    truncate_prompt_tokens: int | None = None
    task: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dimensions is not None and self.dimensions < 1:
            raise ValueError(f"dimensions must be at least 1, got {self.dimensions}")
        if self.truncate_prompt_tokens is not None and (
            self.truncate_prompt_tokens < -1 or self.truncate_prompt_tokens == 0
        ):
            raise ValueError(
                "truncate_prompt_tokens must be -1 or at least 1, "
                f"got {self.truncate_prompt_tokens}"
            )
        if self.task is not None and self.task not in POOLING_TASKS:
            raise ValueError(f"task must be one of {POOLING_TASKS}, got {self.task!r}")


class PoolingOutput:
    """One request's pooled result. ``data`` is the tensor; the accessors are vLLM's views:
    ``embedding`` (list of floats), ``probs`` (class probabilities), ``score`` (one float)."""

    __slots__ = ("data",)

    def __init__(self, data: Any) -> None:
        self.data = data

    @property
    def embedding(self) -> list[float]:
        return self.data.flatten().tolist()  # type: ignore[no-any-return]

    @property
    def probs(self) -> list[float]:
        return self.data.flatten().tolist()  # type: ignore[no-any-return]

    @property
    def score(self) -> float:
        flat = self.data.flatten()
        if flat.numel() != 1:
            raise ValueError(f"a score is one value; this output has {flat.numel()}")
        return float(flat[0])

    def __repr__(self) -> str:
        return f"PoolingOutput(data={self.data!r})"


@dataclass(slots=True)
class PoolingRequestOutput:
    """A finished pooling request: its prompt tokens and its pooled output."""

    request_id: str
    prompt_token_ids: list[int]
    outputs: PoolingOutput
    finished: bool = True
    prompt: str | None = None

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)


# vLLM's task-specific names for the same shape.
EmbeddingRequestOutput = PoolingRequestOutput
ClassificationRequestOutput = PoolingRequestOutput
ScoringRequestOutput = PoolingRequestOutput


def score_pairs(text_1: Any, text_2: Any) -> list[tuple[Any, Any]]:
    """vLLM's pairing for scoring: one text_1 against each text_2, or two equal-length lists
    zipped. A ValueError for empty or mismatched inputs."""
    first = text_1 if isinstance(text_1, list) else [text_1]
    second = text_2 if isinstance(text_2, list) else [text_2]
    if not first or not second:
        raise ValueError("text_1 and text_2 must not be empty")
    if len(first) == 1:
        first = first * len(second)
    if len(first) != len(second):
        raise ValueError(
            f"text_1 has {len(first)} items and text_2 {len(second)}: give one text_1, "
            "or as many as text_2"
        )
    return list(zip(first, second, strict=True))


def cosine_similarity(a: Any, b: Any) -> Any:
    """Cosine similarity of two 1-D tensors, as a 1-element float32 tensor."""
    import torch.nn.functional as F

    return F.cosine_similarity(a.float().flatten(), b.float().flatten(), dim=0).reshape(1)
