"""The guided-decoding (structured output) contract.

A request's constraint is a :class:`GuidedDecodingParams`. A backend plugin turns it into a
token-level automaton in three stages, each with its own lifetime:

    GuidedBackend(tokenizer, vocab_size, eos_token_ids)   once per engine (vocabulary tables)
      .compile(params) -> CompiledConstraint              once per distinct constraint; slow:
                                                          run off the step loop, cached under
                                                          (backend name, params.cache_key())
        .new_matcher() -> Matcher                         once per sequence (n > 1: one each)

Each step the engine fills one shared int32 bitmask ``[batch, ceil(vocab_size / 32)]`` (token
``t`` is allowed iff bit ``t % 32`` of word ``t // 32`` is set), one row per constrained row of
the logits, and masks all of them at once with :func:`apply_token_bitmask`::

    bitmask = allocate_token_bitmask(batch, vocab_size)          # reuse across steps
    for row, matcher in constrained:                             # CPU, before sampling
        matcher.fill_bitmask(bitmask, row)
    apply_token_bitmask(logits, bitmask.to(logits.device), rows)  # one op for all rows
    ... sample ...
    for row, matcher in constrained:
        matcher.accept_token(sampled[row])                       # False: a bug or a race

EOS: a backend knows the engine's EOS ids from its constructor. A matcher allows EOS exactly
when the text so far is a complete match; once it has accepted an EOS it is terminated and its
row allows only EOS. When the grammar is complete and nothing can extend it the row allows
only EOS, so a constrained request ends as soon as its grammar is complete.
"""

from __future__ import annotations

import json as _json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

CONSTRAINT_FIELDS = ("json", "regex", "choice", "grammar", "json_object")


class UnsupportedConstraintError(ValueError):
    """The constraint is valid but this backend cannot express it (``auto`` falls back to the
    next backend on this error only; any other ``ValueError`` means the input is invalid)."""


@dataclass(slots=True)
class GuidedDecodingParams:
    """One guided-decoding constraint of a request (vLLM's ``GuidedDecodingParams``).

    Exactly one of ``json`` (a JSON schema as a dict, a JSON string, or a pydantic model
    class), ``regex``, ``choice`` (a list of strings, the output is exactly one of them),
    ``grammar`` (EBNF/GBNF, or Lark for the backends that speak it) and ``json_object=True``
    (any JSON object) must be given. ``backend`` names the backend for this request (None: the
    engine's). ``whitespace_pattern`` (a regex for the whitespace between JSON tokens) applies
    to ``json`` and ``json_object`` only.
    """

    json: dict[str, Any] | str | None = None
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None
    backend: str | None = None
    whitespace_pattern: str | None = None

    def __post_init__(self) -> None:
        given = [name for name in CONSTRAINT_FIELDS if self._is_set(name)]
        if len(given) > 1:
            raise ValueError(
                f"guided decoding takes exactly one constraint, got {' and '.join(given)}"
            )
        if not given:
            raise ValueError(f"guided decoding needs one of {', '.join(CONSTRAINT_FIELDS)}")
        if self.json is not None:
            self.json = _schema_dict(self.json)
        for name in ("regex", "grammar"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"guided {name} must be a non-empty string")
        if self.choice is not None:
            if isinstance(self.choice, str) or not isinstance(self.choice, (list, tuple)):
                raise ValueError("guided choice must be a list of strings")
            if not self.choice or not all(isinstance(c, str) for c in self.choice):
                raise ValueError("guided choice must be a non-empty list of strings")
            self.choice = list(self.choice)
        if self.backend is not None and not isinstance(self.backend, str):
            raise ValueError("guided backend must be a string")
        if self.whitespace_pattern is not None:
            if not isinstance(self.whitespace_pattern, str):
                raise ValueError("guided whitespace_pattern must be a string")
            if self.kind not in ("json", "json_object"):
                raise ValueError(
                    f"guided whitespace_pattern has no effect with a {self.kind} constraint "
                    "(only with json or json_object)"
                )

    def _is_set(self, name: str) -> bool:
        value = getattr(self, name)
        return bool(value) if name == "json_object" else value is not None

    @property
    def kind(self) -> str:
        """The constraint given: ``"json"``, ``"regex"``, ``"choice"``, ``"grammar"`` or
        ``"json_object"``."""
        return next(name for name in CONSTRAINT_FIELDS if self._is_set(name))

    def cache_key(self) -> tuple[str, str, str | None]:
        """A hashable key equal for constraints that compile to the same automaton (the JSON
        schema canonicalised); the engine caches compiled constraints under
        ``(backend name, cache_key())``."""
        kind = self.kind
        if kind == "json":
            text = _json.dumps(self.json, sort_keys=True, separators=(",", ":"))
        elif kind == "choice":
            text = _json.dumps(self.choice)
        elif kind == "json_object":
            text = ""
        else:
            text = getattr(self, kind)
        return kind, text, self.whitespace_pattern


def _schema_dict(schema: Any) -> dict[str, Any]:
    if isinstance(schema, type) and hasattr(schema, "model_json_schema"):
        schema = schema.model_json_schema()  # a pydantic model class
    if isinstance(schema, (str, bytes)):
        try:
            schema = _json.loads(schema)
        except _json.JSONDecodeError as e:
            raise ValueError(f"guided json is not valid JSON: {e}") from None
    if isinstance(schema, bool):  # JSON Schema allows true / false as whole schemas
        schema = {} if schema else {"not": {}}
    if not isinstance(schema, dict):
        raise ValueError(f"guided json must be a JSON schema object, got {type(schema).__name__}")
    return schema


@runtime_checkable
class Matcher(Protocol):
    """The automaton state of one sequence. Not thread-safe; lives on the step loop."""

    def accept_token(self, token_id: int) -> bool:
        """Advance by one sampled token. Returns False, leaving the state unchanged, when the
        token is not allowed (or the matcher is already terminated)."""
        ...

    def fill_bitmask(self, bitmask: torch.Tensor, row: int) -> None:
        """Overwrite ``bitmask[row]`` (a contiguous CPU int32 tensor of width
        ``ceil(vocab_size / 32)``) with the tokens allowed next. Does not change the state.
        A terminated matcher allows only the EOS ids."""
        ...

    def rollback(self, num_tokens: int) -> None:
        """Undo the last ``num_tokens`` accepted tokens (an accepted EOS counts as one).
        Raises ValueError if more tokens are asked for than were accepted since reset."""
        ...

    def is_terminated(self) -> bool:
        """True once an EOS token has been accepted: the constrained output is finished."""
        ...

    def reset(self) -> None:
        """Return to the start state (as if freshly made by ``new_matcher``)."""
        ...


@runtime_checkable
class CompiledConstraint(Protocol):
    """A constraint compiled for one backend's vocabulary; immutable and shareable by any
    number of matchers (and threads)."""

    def new_matcher(self) -> Matcher:
        """A fresh matcher at the start state. Cheap."""
        ...


@runtime_checkable
class GuidedBackend(Protocol):
    """A guided-decoding backend, registered by name through ``register_guided_backends``.

    Constructed once per engine as ``Backend(tokenizer, vocab_size, eos_token_ids=None)``:
    ``tokenizer`` is the model's HF tokenizer, ``vocab_size`` the width of the model's logits
    (may exceed ``len(tokenizer)``; the extra ids are never allowed), ``eos_token_ids`` the ids
    that end a sequence (None: the tokenizer's ``eos_token_id``).
    """

    name: str

    def compile(self, params: GuidedDecodingParams) -> CompiledConstraint:
        """Compile ``params``' constraint (its ``backend`` field is ignored here).

        May take seconds: call it off the step loop and cache the result. Raises
        :class:`UnsupportedConstraintError` for a valid constraint this backend cannot express,
        and ``ValueError`` naming the problem for an invalid schema, regex or grammar.
        """
        ...


def bitmask_width(vocab_size: int) -> int:
    """Number of int32 words per bitmask row."""
    return (vocab_size + 31) // 32


def allocate_token_bitmask(batch_size: int, vocab_size: int) -> torch.Tensor:
    """A CPU int32 bitmask ``[batch_size, ceil(vocab_size / 32)]`` with every token allowed."""
    return torch.full((batch_size, bitmask_width(vocab_size)), -1, dtype=torch.int32)


_BIT_SHIFTS: dict[torch.device, torch.Tensor] = {}


def _rows_list(rows: Sequence[int] | torch.Tensor) -> list[int]:
    return rows.tolist() if isinstance(rows, torch.Tensor) else list(rows)


def apply_token_bitmask_ref(
    logits: torch.Tensor, bitmask: torch.Tensor, rows: Sequence[int] | torch.Tensor
) -> None:
    """Pure-torch :func:`apply_token_bitmask`: any device, any float dtype."""
    rows_t = torch.as_tensor(_rows_list(rows), dtype=torch.long, device=logits.device)
    if rows_t.numel() == 0:
        return
    shifts = _BIT_SHIFTS.get(logits.device)
    if shifts is None:
        shifts = _BIT_SHIFTS[logits.device] = torch.arange(
            32, dtype=torch.int32, device=logits.device
        )
    words = bitmask.index_select(0, rows_t)  # [R, W]
    allowed = ((words.unsqueeze(-1) >> shifts) & 1).bool().flatten(1)  # [R, W * 32]
    vocab = logits.shape[-1]
    if allowed.shape[1] < vocab:  # ids past the bitmask are never allowed
        pad = allowed.new_zeros(allowed.shape[0], vocab - allowed.shape[1])
        allowed = torch.cat([allowed, pad], dim=1)
    masked = logits.index_select(0, rows_t).masked_fill_(~allowed[:, :vocab], float("-inf"))
    logits.index_copy_(0, rows_t, masked)


def apply_token_bitmask(
    logits: torch.Tensor, bitmask: torch.Tensor, rows: Sequence[int] | torch.Tensor
) -> None:
    """Set ``logits[r, t] = -inf`` in place for every row ``r`` in ``rows`` and every token
    ``t`` whose bit in ``bitmask[r]`` is clear (``bitmask`` is indexed by logits row and lives
    on the logits' device). Other rows are untouched. One vectorized operation: xgrammar's CPU
    kernel for float32 CPU logits when it is installed, else :func:`apply_token_bitmask_ref`.
    """
    row_list = _rows_list(rows)
    if not row_list:
        return
    kernel = _xgrammar_cpu_kernel() if logits.dtype == torch.float32 else None
    if (
        kernel is not None
        and logits.device.type == "cpu"
        and bitmask.device.type == "cpu"
        and logits.shape[-1] <= bitmask.shape[-1] * 32
    ):
        kernel(logits, bitmask, logits.shape[-1], row_list)
    else:
        apply_token_bitmask_ref(logits, bitmask, row_list)


_XGR_KERNEL: list[Any] = []


def _xgrammar_cpu_kernel() -> Any:
    if not _XGR_KERNEL:
        try:
            from xgrammar.kernels.apply_token_bitmask_inplace_cpu import (
                apply_token_bitmask_inplace_cpu,
            )
        except ImportError:
            apply_token_bitmask_inplace_cpu = None
        _XGR_KERNEL.append(apply_token_bitmask_inplace_cpu)
    return _XGR_KERNEL[0]
