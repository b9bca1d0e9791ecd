"""The outlines backend, on outlines-core (the Rust engine under outlines 1.x): JSON schema and
choice become a regex, the regex a token-level DFA (``Index``), walked per sequence by a
``Guide``.

outlines-core speaks regular languages only: context-free grammars (outlines 1.x hands those
to llguidance or xgrammar) are an :class:`UnsupportedConstraintError`, as are schema keywords
its regex translation drops (integer/number bounds among them) or gets wrong (formats). A
``Guide`` rolls back at most ``max_rollback`` tokens itself; longer rollbacks replay the kept
history from the start state.
outlines-core knows one EOS id; the others are mapped onto it here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import outlines_core as oc
import torch

from pagoda.interfaces.guided import GuidedDecodingParams, UnsupportedConstraintError
from pagoda.plugins.guided.common import (
    HistoryMatcher,
    check_json_schema,
    choice_regex,
    invalid,
    resolve_eos_ids,
    token_bytes,
    words_of,
)

# "format": outlines-core spells date/time formats with \d, which its Rust regexes read as
# any Unicode digit, so it would emit dates Python's validators reject.
UNSUPPORTED_SCHEMA_KEYWORDS = (
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "uniqueItems",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "patternProperties",
    "propertyNames",
    "dependentSchemas",
    "dependentRequired",
    "minProperties",
    "maxProperties",
    "unevaluatedProperties",
    "unevaluatedItems",
)

_MAX_ROLLBACK = 256
# outlines-core's regex for "any JSON object" (it cannot build one from {"type": "object"}
# without properties in every version, so json_object is spelled as a generic schema).
_ANY_OBJECT_SCHEMA = {"type": "object"}


class OutlinesBackend:
    """:class:`pagoda.interfaces.GuidedBackend` on outlines-core."""

    name = "outlines"

    def __init__(
        self, tokenizer: Any, vocab_size: int, eos_token_ids: Sequence[int] | None = None
    ) -> None:
        self.vocab_size = vocab_size
        self.eos_token_ids = resolve_eos_ids(tokenizer, eos_token_ids)
        self._eos_row = words_of(self.eos_token_ids, vocab_size)
        by_bytes: dict[bytes, list[int]] = {}
        for token_id, text in token_bytes(tokenizer).items():
            if token_id < vocab_size and token_id not in self.eos_token_ids:
                by_bytes.setdefault(text, []).append(token_id)
        self._vocabulary = oc.Vocabulary(self.eos_token_ids[0], by_bytes)

    def compile(self, params: GuidedDecodingParams) -> OutlinesConstraint:
        kind = params.kind
        if kind == "grammar":
            raise UnsupportedConstraintError(
                "outlines (outlines-core) cannot express context-free grammars; "
                "use xgrammar for guided grammar"
            )
        if kind in ("json", "json_object"):
            schema = params.json if kind == "json" else _ANY_OBJECT_SCHEMA
            check_json_schema(self.name, schema, UNSUPPORTED_SCHEMA_KEYWORDS)
            try:
                regex = oc.json_schema.build_regex_from_schema(
                    json.dumps(schema), params.whitespace_pattern
                )
            except (ValueError, TypeError, RuntimeError) as e:
                raise invalid(self.name, "JSON schema", e) from None
        elif kind == "choice":
            regex = choice_regex(params.choice)
        else:
            regex = params.regex
        try:
            index = oc.Index(regex, self._vocabulary)
        except (ValueError, TypeError, RuntimeError) as e:
            raise invalid(self.name, "regex" if kind == "regex" else kind, e) from None
        return OutlinesConstraint(index, self.eos_token_ids, self._eos_row)


class OutlinesConstraint:
    """A compiled outlines-core ``Index``; shared read-only by its guides."""

    def __init__(self, index: oc.Index, eos_ids: list[int], eos_row: torch.Tensor) -> None:
        self._index = index
        self._eos_ids = eos_ids
        self._eos_row = eos_row

    def new_matcher(self) -> OutlinesMatcher:
        return OutlinesMatcher(self._index, self._eos_ids, self._eos_row)


class OutlinesMatcher(HistoryMatcher):
    """A ``Guide`` per sequence. EOS is handled by :class:`HistoryMatcher` (outlines-core
    cannot advance a final state on EOS)."""

    def __init__(self, index: oc.Index, eos_ids: list[int], eos_row: torch.Tensor) -> None:
        super().__init__(eos_ids, eos_row)
        self._guide = oc.Guide(index, max_rollback=_MAX_ROLLBACK)
        self._primary_eos = eos_ids[0]
        self._other_eos = eos_ids[1:]

    def _accept(self, token_id: int) -> bool:
        if not self._guide.accepts_tokens([token_id]):
            return False
        self._guide.advance(token_id, return_tokens=False)
        return True

    def _can_end(self) -> bool:
        return self._guide.is_finished()

    def _fill(self, bitmask: torch.Tensor, row: int) -> None:
        words = bitmask[row]
        if not words.is_contiguous() or bitmask.dtype != torch.int32 or bitmask.is_cuda:
            raise ValueError("the bitmask must be a contiguous CPU int32 tensor")
        self._guide.write_mask_into(words.data_ptr(), words.numel(), 4)
        if self._other_eos and self._guide.is_finished():
            words.bitwise_or_(self._eos_row)

    def _rollback(self, num_tokens: int) -> bool:
        if num_tokens > self._guide.get_allowed_rollback():
            return False
        self._guide.rollback_state(num_tokens)
        return True

    def _reset(self) -> None:
        self._guide.reset()
