"""The xgrammar backend: JSON schema, regex, choice, EBNF/GBNF or Lark grammars, any JSON.

xgrammar rolls back natively (unlimited), rejects special tokens and ids past the tokenizer,
and allows the stop tokens exactly when the grammar is complete.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import torch
import xgrammar as xgr

from pagoda.interfaces.guided import GuidedDecodingParams, UnsupportedConstraintError
from pagoda.plugins.guided.common import (
    check_json_schema,
    invalid,
    resolve_eos_ids,
    special_token_ids,
    words_of,
)

# Schema keywords xgrammar 0.2 does not enforce (it would accept output violating them).
UNSUPPORTED_SCHEMA_KEYWORDS = (
    "not",
    "if",
    "then",
    "else",
    "dependentSchemas",
    "dependentRequired",
    "contains",
    "uniqueItems",
    "multipleOf",
    "patternProperties",
    "propertyNames",
    "unevaluatedProperties",
    "unevaluatedItems",
)


class XGrammarBackend:
    """:class:`pagoda.interfaces.GuidedBackend` on xgrammar's ``GrammarCompiler``."""

    name = "xgrammar"

    def __init__(
        self,
        tokenizer: Any,
        vocab_size: int,
        eos_token_ids: Sequence[int] | None = None,
        max_threads: int = 2,
    ) -> None:
        self.vocab_size = vocab_size
        self.eos_token_ids = resolve_eos_ids(tokenizer, eos_token_ids)
        self._eos_row = words_of(self.eos_token_ids, vocab_size)
        detected = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        # xgrammar treats a token with empty text as special (never allowed); from_huggingface
        # keeps added special tokens such as <|endoftext|> as literal text, which a JSON string
        # or a regex like ".*" would then admit. So blank them out.
        special = special_token_ids(tokenizer)
        decoded = [b"" if i in special else text for i, text in enumerate(detected.decoded_vocab)]
        info = xgr.TokenizerInfo(
            decoded, xgr.VocabType.RAW, vocab_size=vocab_size, stop_token_ids=self.eos_token_ids
        )
        self._compiler = xgr.GrammarCompiler(info, max_threads=max_threads)

    def compile(self, params: GuidedDecodingParams) -> XGrammarConstraint:
        kind = params.kind
        if params.whitespace_pattern is not None:
            raise UnsupportedConstraintError(
                "xgrammar cannot take a whitespace_pattern (it allows any JSON whitespace)"
            )
        if kind == "json":
            check_json_schema(self.name, params.json, UNSUPPORTED_SCHEMA_KEYWORDS)
            what, build = (
                "JSON schema",
                lambda: self._compiler.compile_json_schema(
                    json.dumps(params.json), any_whitespace=True, strict_mode=True
                ),
            )
        elif kind == "json_object":
            what, build = (
                "JSON object",
                lambda: self._compiler.compile_json_schema(
                    '{"type": "object"}', any_whitespace=True, strict_mode=False
                ),
            )
        elif kind == "regex":
            what, build = "regex", lambda: self._compiler.compile_regex(params.regex)
        elif kind == "choice":
            # json.dumps gives a quoted literal with the escapes xgrammar's EBNF reads.
            rule = " | ".join(json.dumps(c, ensure_ascii=False) for c in params.choice)
            what, build = "choice", lambda: self._compiler.compile_grammar(f"root ::= {rule}")
        else:
            grammar = params.grammar
            if "::=" in grammar:
                what, build = "EBNF grammar", lambda: self._compiler.compile_grammar(grammar)
            else:
                what, build = "Lark grammar", lambda: self._compiler.compile_lark(grammar)
        try:
            compiled = build()
        except (RuntimeError, ValueError, TypeError) as e:
            raise invalid(self.name, what, e) from None
        return XGrammarConstraint(compiled, self._eos_row)


class XGrammarConstraint:
    """A compiled xgrammar grammar; thread-safe to share."""

    def __init__(self, compiled: xgr.CompiledGrammar, eos_row: torch.Tensor) -> None:
        self._compiled = compiled
        self._eos_row = eos_row

    def new_matcher(self) -> XGrammarMatcher:
        return XGrammarMatcher(xgr.GrammarMatcher(self._compiled), self._eos_row)


class XGrammarMatcher:
    """One sequence's ``xgr.GrammarMatcher``; rollback is xgrammar's own."""

    def __init__(self, matcher: xgr.GrammarMatcher, eos_row: torch.Tensor) -> None:
        self._matcher = matcher
        self._eos_row = eos_row
        self._num_accepted = 0

    def accept_token(self, token_id: int) -> bool:
        if self._matcher.is_terminated() or not self._matcher.accept_token(token_id):
            return False
        self._num_accepted += 1
        return True

    def fill_bitmask(self, bitmask: torch.Tensor, row: int) -> None:
        if self._matcher.is_terminated():  # xgrammar refuses to fill after the stop token
            bitmask[row].copy_(self._eos_row)
        else:
            self._matcher.fill_next_token_bitmask(bitmask, row)

    def rollback(self, num_tokens: int) -> None:
        if num_tokens < 0 or num_tokens > self._num_accepted:
            raise ValueError(f"cannot roll back {num_tokens} tokens: {self._num_accepted} accepted")
        if num_tokens:
            self._matcher.rollback(num_tokens)
            self._num_accepted -= num_tokens

    def is_terminated(self) -> bool:
        return self._matcher.is_terminated()

    def reset(self) -> None:
        self._matcher.reset()
        self._num_accepted = 0
