"""Sampling parameters of a request, with vLLM's field names, defaults and ranges."""

from __future__ import annotations

import copy
import enum
from dataclasses import dataclass

from pagoda.interfaces.guided import GuidedDecodingParams

# Below this temperature sampling is greedy (vLLM's _SAMPLING_EPS).
_SAMPLING_EPS = 1e-5


class RequestOutputKind(enum.Enum):
    """What each output of a running request carries (vLLM's names)."""

    CUMULATIVE = 0  # everything so far
    DELTA = 1  # only what is new since the previous output (streaming)
    FINAL_ONLY = 2  # nothing until the request finishes


class SamplingType(enum.IntEnum):
    """How the sampler picks a row's next token."""

    GREEDY = 0
    RANDOM = 1
    RANDOM_SEED = 2


@dataclass(slots=True)
class SamplingParams:
    """How to sample the completions of one request (vLLM's `SamplingParams`).

    `__post_init__` validates every field against vLLM's ranges, raising `ValueError` that
    names the field, and normalises: `stop` and `stop_token_ids` become lists, `logit_bias`
    becomes `dict[int, float]` (JSON's string keys are accepted), `top_k=-1` becomes 0, and a
    greedy request (temperature below 1e-5) has top-p, top-k and min-p disabled.
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    max_tokens: int | None = 16
    min_tokens: int = 0
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    logit_bias: dict[int, float] | None = None
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    output_kind: RequestOutputKind = RequestOutputKind.CUMULATIVE
    guided_decoding: GuidedDecodingParams | None = None

    def __post_init__(self) -> None:
        self._normalize()
        self._verify()
        if self.is_greedy:
            # Greedy takes the argmax; these would not change it, so the sampler skips them.
            self.top_p = 1.0
            self.top_k = 0
            self.min_p = 0.0

    def _normalize(self) -> None:
        if self.stop is None:
            self.stop = []
        elif isinstance(self.stop, str):
            self.stop = [self.stop]
        else:
            self.stop = list(self.stop)
        if not all(isinstance(s, str) for s in self.stop):
            raise ValueError(f"stop must be a string or a list of strings, got {self.stop!r}.")
        self.stop_token_ids = [] if self.stop_token_ids is None else list(self.stop_token_ids)
        if not all(_is_int(t) and t >= 0 for t in self.stop_token_ids):
            raise ValueError(
                f"stop_token_ids must be non-negative integers, got {self.stop_token_ids!r}."
            )
        if self.logit_bias is not None:
            self.logit_bias = {_token_id_key(k): float(v) for k, v in self.logit_bias.items()}
        if self.top_k == -1:
            self.top_k = 0

    def _verify(self) -> None:
        # Float ranges are written as `not (in range)` so that NaN is rejected too.
        if not (_is_int(self.n) and self.n >= 1):
            raise ValueError(f"n must be an integer of at least 1, got {self.n!r}.")
        if not self.temperature >= 0.0:
            raise ValueError(f"temperature must be non-negative, got {self.temperature}.")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")
        if not (_is_int(self.top_k) and self.top_k >= 0):
            raise ValueError(
                f"top_k must be 0 or -1 (disabled) or a positive integer, got {self.top_k!r}."
            )
        if not 0.0 <= self.min_p <= 1.0:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p}.")
        if not -2.0 <= self.presence_penalty <= 2.0:
            raise ValueError(f"presence_penalty must be in [-2, 2], got {self.presence_penalty}.")
        if not -2.0 <= self.frequency_penalty <= 2.0:
            raise ValueError(f"frequency_penalty must be in [-2, 2], got {self.frequency_penalty}.")
        if not self.repetition_penalty > 0.0:
            raise ValueError(
                f"repetition_penalty must be greater than 0, got {self.repetition_penalty}."
            )
        if self.seed is not None and not _is_int(self.seed):
            raise ValueError(f"seed must be an integer, got {self.seed!r}.")
        if self.max_tokens is not None and not (_is_int(self.max_tokens) and self.max_tokens >= 1):
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens!r}.")
        if not (_is_int(self.min_tokens) and self.min_tokens >= 0):
            raise ValueError(f"min_tokens must be non-negative, got {self.min_tokens!r}.")
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise ValueError(
                f"min_tokens must be less than or equal to max_tokens={self.max_tokens}, "
                f"got {self.min_tokens}."
            )
        for name in ("logprobs", "prompt_logprobs"):
            value = getattr(self, name)
            if value is not None and not (_is_int(value) and value >= 0):
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}.")

    @property
    def sampling_type(self) -> SamplingType:
        """GREEDY below temperature 1e-5, else RANDOM_SEED when seeded, else RANDOM."""
        if self.temperature < _SAMPLING_EPS:
            return SamplingType.GREEDY
        if self.seed is not None:
            return SamplingType.RANDOM_SEED
        return SamplingType.RANDOM

    @property
    def is_greedy(self) -> bool:
        """Whether the next token is the argmax of the processed logits."""
        return self.temperature < _SAMPLING_EPS

    def verify_vocab(self, vocab_size: int) -> None:
        """Raise `ValueError` if a token id in `logit_bias` or `stop_token_ids` is not in the
        vocabulary. The engine calls this when it admits a request, since the sampler indexes
        logits with these ids and cannot reject one request in the middle of a batch."""
        for token_id in self.logit_bias or ():
            if token_id >= vocab_size:
                raise ValueError(
                    f"logit_bias has token id {token_id}, outside the vocabulary of "
                    f"{vocab_size} tokens."
                )
        for token_id in self.stop_token_ids:
            if token_id >= vocab_size:
                raise ValueError(
                    f"stop_token_ids has token id {token_id}, outside the vocabulary of "
                    f"{vocab_size} tokens."
                )

    def clone(self) -> SamplingParams:
        """A deep copy: changing the copy's lists or dict leaves this one unchanged."""
        return copy.deepcopy(self)

    def child_params(self, index: int) -> SamplingParams:
        """The params of completion `index` (0 <= index < n) of an `n > 1` request.

        Each child is sampled as its own sequence, so it gets `n=1`. When a seed is set, child
        `index` gets `seed + index` (as vLLM does): children differ from one another and the
        whole request stays reproducible; child 0 samples exactly as an `n=1` request with the
        same seed. Unseeded children stay unseeded.
        """
        if not 0 <= index < self.n:
            raise ValueError(f"index must be in [0, n={self.n}), got {index}.")
        child = self.clone()
        child.n = 1
        if self.seed is not None:
            child.seed = self.seed + index
        return child


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _token_id_key(key: object) -> int:
    """A `logit_bias` key as a token id; JSON object keys arrive as strings."""
    if isinstance(key, str) and key.strip().lstrip("-").isdigit():
        key = int(key)
    if not _is_int(key) or key < 0:
        raise ValueError(f"logit_bias keys must be non-negative token ids, got {key!r}.")
    return key
