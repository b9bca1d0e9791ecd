"""What the guided backends share: EOS ids, vocabulary bytes, schema checks, error text, and a
matcher base that keeps the accepted-token history (rollback by replay where a library cannot
roll back itself)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from pagoda.interfaces.guided import UnsupportedConstraintError, bitmask_width


def resolve_eos_ids(tokenizer: Any, eos_token_ids: Sequence[int] | None) -> list[int]:
    """The engine's EOS ids, else the tokenizer's ``eos_token_id``."""
    if eos_token_ids is None:
        eos = tokenizer.eos_token_id
        eos_token_ids = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    ids = list(dict.fromkeys(int(i) for i in eos_token_ids))
    if not ids:
        raise ValueError("guided decoding needs at least one EOS token id")
    return ids


def special_token_ids(tokenizer: Any) -> set[int]:
    """Ids of special added tokens (chat markers etc.): never allowed except as EOS."""
    ids = set(tokenizer.all_special_ids)
    ids.update(i for i, tok in tokenizer.added_tokens_decoder.items() if tok.special)
    return ids


def words_of(token_ids: Iterable[int], vocab_size: int) -> torch.Tensor:
    """One bitmask row (int32 words) with the bits of ``token_ids`` set."""
    words = np.zeros(bitmask_width(vocab_size), dtype=np.uint32)
    for t in token_ids:
        words[t >> 5] |= np.uint32(1 << (t & 31))
    return torch.from_numpy(words.view(np.int32))


_BYTE_DECODER: dict[str, int] | None = None


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, inverted: printable char -> byte."""
    global _BYTE_DECODER
    if _BYTE_DECODER is None:
        bs = (
            list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
        )
        cs = bs[:]
        n = 0
        for b in range(256):
            if b not in bs:
                bs.append(b)
                cs.append(256 + n)
                n += 1
        _BYTE_DECODER = {chr(c): b for b, c in zip(bs, cs, strict=True)}
    return _BYTE_DECODER


def token_bytes(tokenizer: Any) -> dict[int, bytes]:
    """The bytes each regular (non-special) token stands for, by id.

    Byte-level BPE (GPT-2, Llama 3, SmolLM): each char of the token string is one byte.
    SentencePiece-style vocabularies: ``▁`` is a space and ``<0xAB>`` one raw byte. Any other
    token string is taken as its UTF-8 text.
    """
    byte_decoder = _byte_decoder()
    special = special_token_ids(tokenizer)
    out: dict[int, bytes] = {}
    for text, token_id in tokenizer.get_vocab().items():
        if token_id in special:
            continue
        if all(c in byte_decoder for c in text):
            out[token_id] = bytes(byte_decoder[c] for c in text)
        elif re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", text):
            out[token_id] = bytes([int(text[3:5], 16)])
        else:
            out[token_id] = text.replace("\u2581", " ").encode()
    return out


def is_byte_level(tokenizer: Any) -> bool:
    """Whether every regular token string is in the byte-level alphabet."""
    byte_decoder = _byte_decoder()
    special = special_token_ids(tokenizer)
    vocab = tokenizer.get_vocab()
    return all(all(c in byte_decoder for c in s) for s, i in vocab.items() if i not in special)


_CPP_PREFIX = re.compile(r"^\[[^\]]*\]\s*\S+:\d+:\s*(Check failed: .*? is false: )?")


def clean_error(e: BaseException) -> str:
    """A library's error message without C++ file/line/timestamp prefixes."""
    text = str(e).strip() or type(e).__name__
    return _CPP_PREFIX.sub("", text).strip()


def invalid(backend: str, kind: str, e: BaseException) -> ValueError:
    return ValueError(f"{backend}: invalid {kind}: {clean_error(e)}")


# Keywords whose values are maps of name -> schema, lists of schemas, or one schema.
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_ONE = (
    "items",
    "additionalProperties",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "unevaluatedProperties",
    "unevaluatedItems",
    "additionalItems",
)


def schema_keywords(schema: Any) -> set[str]:
    """Every keyword used anywhere in a JSON schema (property names are not keywords)."""
    found: set[str] = set()
    todo = [schema]
    while todo:
        node = todo.pop()
        if not isinstance(node, dict):
            continue
        found.update(node)
        for key in _SCHEMA_MAPS:
            if isinstance(node.get(key), dict):
                todo.extend(node[key].values())
        for key in _SCHEMA_LISTS:
            if isinstance(node.get(key), list):
                todo.extend(node[key])
        for key in _SCHEMA_ONE:
            if isinstance(node.get(key), (dict, list)):
                value = node[key]
                todo.extend(value if isinstance(value, list) else [value])
    return found


def check_json_schema(backend: str, schema: dict[str, Any], unsupported: Iterable[str]) -> None:
    """Raise ValueError if ``schema`` is not a valid JSON schema (metaschema check, and every
    local ``$ref`` must resolve), UnsupportedConstraintError if it uses a keyword this backend
    would silently not enforce."""
    import jsonschema

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as e:
        path = "/".join(str(p) for p in e.absolute_path) or "(root)"
        raise ValueError(f"{backend}: invalid JSON schema at {path}: {e.message}") from None
    _check_local_refs(backend, schema)
    bad = sorted(schema_keywords(schema) & set(unsupported))
    if bad:
        raise UnsupportedConstraintError(
            f"{backend} cannot enforce JSON schema keyword(s) {', '.join(bad)}"
        )


_LITERAL_KEYS = ("enum", "const", "default", "examples")  # their values are data, not schemas


def schema_nodes(schema: Any) -> Iterator[dict[str, Any]]:
    """Every object in a JSON schema, depth first, except inside literal values (``enum``,
    ``const``, ``default``, ``examples``)."""
    todo: list[Any] = [schema]
    while todo:
        node = todo.pop()
        if isinstance(node, list):
            todo.extend(node)
        elif isinstance(node, dict):
            yield node
            todo.extend(v for k, v in node.items() if k not in _LITERAL_KEYS)


def _check_local_refs(backend: str, schema: dict[str, Any]) -> None:
    for node in schema_nodes(schema):
        ref = node.get("$ref")
        if not isinstance(ref, str):
            continue
        if not ref.startswith("#"):
            raise UnsupportedConstraintError(f"{backend}: only local $ref, got {ref!r}")
        target: Any = schema
        for part in filter(None, ref[1:].split("/")):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, dict) or part not in target:
                raise ValueError(f"{backend}: invalid JSON schema: $ref {ref!r} does not resolve")
            target = target[part]


_REGEX_META = set("\\.^$|?*+()[]{}")


def escape_regex(text: str) -> str:
    """Escape a literal for the regex dialects of outlines-core (Rust) and interegular."""
    return "".join("\\" + c if c in _REGEX_META else c for c in text)


def choice_regex(choices: Sequence[str]) -> str:
    return "(" + "|".join(escape_regex(c) for c in choices) + ")"


class HistoryMatcher:
    """A matcher base that keeps the accepted tokens, so that rollback can always fall back to
    reset-and-replay and termination (an accepted EOS) is tracked here, not by the library.

    Subclasses implement ``_accept(token)`` (advance the library state or return False),
    ``_fill(bitmask, row)`` (the library's allowed tokens, EOS bits included when the match is
    complete), ``_can_end()``, ``_reset()`` and optionally ``_rollback(n) -> bool`` (True if the
    library rolled back ``n`` non-EOS tokens itself).
    """

    def __init__(self, eos_ids: Sequence[int], eos_row: torch.Tensor) -> None:
        self._eos_ids = frozenset(eos_ids)
        self._eos_row = eos_row
        self._history: list[int] = []
        self._terminated = False

    def accept_token(self, token_id: int) -> bool:
        if self._terminated:
            return False
        if token_id in self._eos_ids:
            if not self._can_end():
                return False
            self._terminated = True
        elif not self._accept(token_id):
            return False
        self._history.append(token_id)
        return True

    def fill_bitmask(self, bitmask: torch.Tensor, row: int) -> None:
        if self._terminated:
            bitmask[row].copy_(self._eos_row)
        else:
            self._fill(bitmask, row)

    def rollback(self, num_tokens: int) -> None:
        if num_tokens < 0 or num_tokens > len(self._history):
            raise ValueError(f"cannot roll back {num_tokens} tokens: {len(self._history)} accepted")
        if num_tokens == 0:
            return
        if self._terminated:
            self._terminated = False
            self._history.pop()
            num_tokens -= 1
        if num_tokens == 0:
            return
        kept = self._history[:-num_tokens]
        if not self._rollback(num_tokens):
            self._reset()
            for token in kept:
                if not self._accept(token):
                    raise RuntimeError("replaying accepted tokens failed")
        self._history = kept

    def is_terminated(self) -> bool:
        return self._terminated

    def reset(self) -> None:
        self._history.clear()
        self._terminated = False
        self._reset()

    def _rollback(self, num_tokens: int) -> bool:
        return False

    def _accept(self, token_id: int) -> bool:
        raise NotImplementedError

    def _fill(self, bitmask: torch.Tensor, row: int) -> None:
        raise NotImplementedError

    def _can_end(self) -> bool:
        raise NotImplementedError

    def _reset(self) -> None:
        raise NotImplementedError
