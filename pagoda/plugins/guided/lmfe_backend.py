"""The lm-format-enforcer backend: JSON schema (or any JSON), regex, choice.

lm-format-enforcer walks a character-level parser over a prefix tree of the vocabulary. Its
transformers integration does not import under transformers 5, so the tokenizer data is built
here through its lower-level ``TokenEnforcerTokenizerData`` exactly as that integration would.
A ``TokenEnforcer`` is keyed by the whole token sequence (it caches every prefix it has seen),
so rollback is dropping tokens from the history; its allowed tokens come as a bitmask row.
It has no context-free grammars and no whitespace patterns.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from lmformatenforcer import (
    CharacterLevelParser,
    JsonSchemaParser,
    RegexParser,
    StringParser,
    TokenEnforcer,
    TokenEnforcerTokenizerData,
    UnionParser,
)
from lmformatenforcer import jsonschemaparser as _jsp

from pagoda.interfaces.guided import GuidedDecodingParams, UnsupportedConstraintError
from pagoda.plugins.guided.common import (
    HistoryMatcher,
    check_json_schema,
    invalid,
    resolve_eos_ids,
    schema_nodes,
    special_token_ids,
    words_of,
)


def _fix_lmfe_json_bugs() -> None:
    """Bugs of lm-format-enforcer 0.11.3 that let invalid JSON through, fixed where the
    characters allowed next are computed (idempotent, once per process):

    - an integer may continue ``-0`` with ``.`` (so ``"n": -0.3`` passes as an integer), or
      take an exponent (``509687E-12``);
    - a number may continue ``2.`` with an exponent (``2.e+0``, not JSON);
    - after ``,`` in an object, ``}`` is allowed (a trailing comma) once the required keys
      are there: the "key or end" stage is shared by ``{`` and ``,``.
    """
    number, obj = _jsp.NumberParsingState, _jsp.ObjectParsingState
    if getattr(number.get_allowed_characters, "_pagoda_fixed", False):
        return
    number_chars, object_chars = number.get_allowed_characters, obj.get_allowed_characters

    def number_allowed(self: Any) -> str:
        allowed = number_chars(self)
        if self.parsed_string.endswith("."):
            return "0123456789"  # JSON needs a digit after the decimal point
        if not self.allow_floating_point:
            return allowed.replace(".", "").replace("e", "").replace("E", "")
        return allowed

    def object_allowed(self: Any) -> str:
        allowed = object_chars(self)
        after_comma = (
            self.current_stage == _jsp.ObjectParsingStage.PARSING_KEY_OR_END and self.existing_keys
        )
        return allowed.replace("}", "") if after_comma else allowed

    number_allowed._pagoda_fixed = True  # type: ignore[attr-defined]
    number.get_allowed_characters = number_allowed
    obj.get_allowed_characters = object_allowed


_fix_lmfe_json_bugs()

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

# minLength/maxLength: 0.11.3 overshoots maxLength by one with word-start tokens and can end
# a length-limited string unterminated, so they are refused rather than half enforced.
UNSUPPORTED_SCHEMA_KEYWORDS = (
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "format",
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
    "prefixItems",
)


def _check_enums(schema: Any) -> None:
    """lm-format-enforcer 0.11.3 compiles an enum that mixes types (or holds booleans or
    null), then fails mid-generation; refuse those up front."""
    for node in schema_nodes(schema):
        values = node.get("enum")
        if isinstance(values, list) and values:
            kinds = {type(v) for v in values}
            if len(kinds) > 1 or not kinds <= {str, int, float}:
                raise UnsupportedConstraintError(
                    "lm-format-enforcer only enforces enums of one type (strings or numbers)"
                )


def build_tokenizer_data(
    tokenizer: Any, vocab_size: int, eos_token_ids: list[int]
) -> TokenEnforcerTokenizerData:
    """lm-format-enforcer's ``build_token_enforcer_tokenizer_data`` without its transformers
    import: each regular token's text is decoded after a ``"0"`` token, so a leading space
    that a lone decode would strip is kept, and a token is a word start when that text is
    longer than its lone decode."""
    special = special_token_ids(tokenizer)
    ids = [i for i in range(min(len(tokenizer), vocab_size)) if i not in special]
    token_0 = tokenizer.encode("0", add_special_tokens=False)[-1]
    after_0 = tokenizer.batch_decode([[token_0, i] for i in ids])
    alone = tokenizer.batch_decode([[i] for i in ids])
    # A token that is part of a multi-byte character decodes to U+FFFD, and lm-format-enforcer
    # would then feed its parser a character that is not in the output: leave such tokens (and
    # non-whitespace control characters, which it would put raw into JSON strings) out.
    regular = [
        (i, a[1:], len(a[1:]) > len(b))
        for i, a, b in zip(ids, after_0, alone, strict=True)
        if "\ufffd" not in a and not _CONTROL.search(a)
    ]

    def decode(tokens: list[int]) -> str:
        return tokenizer.decode(tokens).rstrip("\ufffd")

    return TokenEnforcerTokenizerData(regular, decode, eos_token_ids, True, vocab_size)


class LMFormatEnforcerBackend:
    """:class:`pagoda.interfaces.GuidedBackend` on lm-format-enforcer."""

    name = "lm-format-enforcer"

    def __init__(
        self, tokenizer: Any, vocab_size: int, eos_token_ids: Sequence[int] | None = None
    ) -> None:
        self.vocab_size = vocab_size
        self.eos_token_ids = resolve_eos_ids(tokenizer, eos_token_ids)
        self._eos_row = words_of(self.eos_token_ids, vocab_size)
        self._data = build_tokenizer_data(tokenizer, vocab_size, self.eos_token_ids)

    def compile(self, params: GuidedDecodingParams) -> LMFormatEnforcerConstraint:
        kind = params.kind
        if kind == "grammar":
            raise UnsupportedConstraintError(
                "lm-format-enforcer cannot express grammars; use xgrammar for guided grammar"
            )
        if params.whitespace_pattern is not None:
            raise UnsupportedConstraintError("lm-format-enforcer cannot take a whitespace_pattern")
        try:
            if kind == "json":
                check_json_schema(self.name, params.json, UNSUPPORTED_SCHEMA_KEYWORDS)
                _check_enums(params.json)
                parser: CharacterLevelParser = JsonSchemaParser(params.json)
            elif kind == "json_object":
                parser = JsonSchemaParser({"type": "object"})
            elif kind == "regex":
                parser = RegexParser(params.regex)
            else:
                parser = UnionParser([StringParser(c) for c in params.choice])
            # A parser builds lazily: probe the start state now so that a bad schema or
            # regex fails here, not mid-generation.
            TokenEnforcer(self._data, parser).get_allowed_tokens([])
        except ValueError:
            raise
        except Exception as e:
            raise invalid(self.name, "JSON schema" if kind == "json" else kind, e) from None
        return LMFormatEnforcerConstraint(parser, self._data, self.eos_token_ids, self._eos_row)


class LMFormatEnforcerConstraint:
    """A root character-level parser (immutable: parsers return new parsers per character)."""

    def __init__(
        self,
        parser: CharacterLevelParser,
        data: TokenEnforcerTokenizerData,
        eos_ids: list[int],
        eos_row: torch.Tensor,
    ) -> None:
        self._parser = parser
        self._data = data
        self._eos_ids = eos_ids
        self._eos_row = eos_row

    def new_matcher(self) -> LMFormatEnforcerMatcher:
        return LMFormatEnforcerMatcher(
            TokenEnforcer(self._data, self._parser), self._eos_ids, self._eos_row
        )


class LMFormatEnforcerMatcher(HistoryMatcher):
    """One ``TokenEnforcer`` per sequence, asked about the generated tokens so far."""

    def __init__(self, enforcer: TokenEnforcer, eos_ids: list[int], eos_row: torch.Tensor) -> None:
        super().__init__(eos_ids, eos_row)
        self._enforcer = enforcer
        self._eos_probe = eos_ids[0]

    def _allowed(self) -> torch.Tensor:
        return self._enforcer.get_allowed_tokens(self._history).allowed_tokens

    @staticmethod
    def _has(words: torch.Tensor, token_id: int) -> bool:
        word = token_id >> 5
        return word < words.numel() and bool((int(words[word]) >> (token_id & 31)) & 1)

    def _accept(self, token_id: int) -> bool:
        return self._has(self._allowed(), token_id)

    def _can_end(self) -> bool:
        return self._has(self._allowed(), self._eos_probe)

    def _fill(self, bitmask: torch.Tensor, row: int) -> None:
        bitmask[row].copy_(self._allowed())

    def _rollback(self, num_tokens: int) -> bool:
        return True  # the enforcer is keyed by the history, which the base truncates

    def _reset(self) -> None:
        pass
