"""A request (one sequence) as the engine tracks it."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from pagoda.outputs import PositionLogprobs
from pagoda.sampling_params import SamplingParams


class RequestStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    PREEMPTED = "preempted"
    FINISHED_STOPPED = "stop"
    FINISHED_LENGTH = "length"
    FINISHED_ABORTED = "abort"

    @property
    def finished(self) -> bool:
        return self in (
            RequestStatus.FINISHED_STOPPED,
            RequestStatus.FINISHED_LENGTH,
            RequestStatus.FINISHED_ABORTED,
        )


@dataclass(slots=True, eq=False)
class Request:
    """One sequence: its tokens, how many of them are in the KV cache, and its status.

    ``token_ids`` is prompt + generated tokens; ``num_computed_tokens`` of them have K/V in
    the cache. A request with ``num_computed_tokens == len(token_ids) - 1`` is decoding.

    Under async scheduling a step is launched before the previous step's sampled tokens reach
    the host: ``num_pending_tokens`` counts sampled tokens still on their way (0 or 1), which
    the scheduler already plans for (``num_all_tokens``) and the model runner feeds to the
    next step from the device.
    """

    request_id: str
    prompt_token_ids: list[int]
    sampling_params: SamplingParams
    eos_token_ids: frozenset[int]
    arrival_time: float
    max_model_len: int
    prompt: str | None = None
    extra_keys: tuple[Any, ...] = ()
    token_ids: list[int] = field(default_factory=list)
    output_token_ids: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0
    num_pending_tokens: int = 0
    num_cached_tokens: int = -1  # prefix-cache hit of the first scheduling; -1 until then
    num_preemptions: int = 0
    num_sent_tokens: int = 0  # output tokens already sent (delta outputs)
    status: RequestStatus = RequestStatus.WAITING
    stop_reason: int | str | None = None
    cumulative_logprob: float = 0.0
    logprobs: list[PositionLogprobs] | None = None
    prompt_logprobs: list[PositionLogprobs | None] | None = None
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    # Per-request helpers the engine attaches (sampler row, detokenizer).
    sampling_row: Any = None
    # A grammar matcher waiting for the reasoning to end before it constrains anything.
    pending_matcher: Any = None
    detokenizer: Any = None
    # A pooling request's state (core.pooler.PoolingState); None for generation.
    pooling: Any = None

    def __post_init__(self) -> None:
        self.token_ids = list(self.prompt_token_ids)
        if self.sampling_params.logprobs is not None:
            self.logprobs = []
        if self.sampling_params.prompt_logprobs is not None:
            self.prompt_logprobs = [None]

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_all_tokens(self) -> int:
        """Known tokens plus sampled ones not yet on the host."""
        return len(self.token_ids) + self.num_pending_tokens

    @property
    def length_capped(self) -> bool:
        """Whether its pending tokens already reach ``max_tokens`` or the context limit, so
        it will finish on them and needs no further step."""
        if not self.num_pending_tokens:
            return False
        max_tokens = self.sampling_params.max_tokens
        reached = len(self.output_token_ids) + self.num_pending_tokens
        return (max_tokens is not None and reached >= max_tokens) or (
            self.num_all_tokens >= self.max_model_len
        )

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    @property
    def finish_reason(self) -> str | None:
        return self.status.value if self.status.finished else None

    def append_output_token(self, token_id: int) -> None:
        self.output_token_ids.append(token_id)
        self.token_ids.append(token_id)
