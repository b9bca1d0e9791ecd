"""The guided-decoding contract and its three built-in backends (xgrammar, outlines,
lm-format-enforcer), on the default model's tokenizer.

A matcher is driven by a simulated model: each step it fills its bitmask row, the "model"
picks an allowed token (seeded; it prefers EOS and closing tokens so outputs stay short, and
otherwise picks uniformly among the allowed tokens), and the matcher accepts it. The decoded
text is then checked by an independent oracle: jsonschema for JSON, Python's ``re`` for
regexes and the SQL grammar, membership for choices.
"""

from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import torch

from pagoda.interfaces import (
    CompiledConstraint,
    GuidedBackend,
    GuidedDecodingParams,
    Matcher,
    UnsupportedConstraintError,
    allocate_token_bitmask,
    apply_token_bitmask,
)
from pagoda.interfaces.guided import apply_token_bitmask_ref
from pagoda.plugins.guided import outlines_backend
from pagoda.registry import load_reference

BACKENDS = ["xgrammar", "outlines", "lm-format-enforcer"]
PAD = 64  # the model's logits are wider than the tokenizer: padded ids are never allowed
MAX_STEPS = 300
SEEDS = (0, 1)


def backend_refs() -> dict[str, str]:
    from pagoda.plugins.guided import plugin

    found: dict[str, str] = {}
    plugin.register_guided_backends(lambda name, ref, **_: found.setdefault(name, ref))
    return found


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="module")
def vocab_size(tokenizer: Any) -> int:
    return len(tokenizer) + PAD


_BUILT: dict[str, tuple[GuidedBackend, float]] = {}


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tokenizer: Any, vocab_size: int) -> GuidedBackend:
    """Each backend built once per module (vocabulary tables take up to ~2 s)."""
    name = request.param
    if name not in _BUILT:
        start = time.perf_counter()
        cls = load_reference(backend_refs()[name])
        _BUILT[name] = (
            cls(tokenizer, vocab_size, eos_token_ids=[tokenizer.eos_token_id]),
            time.perf_counter() - start,
        )
    return _BUILT[name][0]


def forbidden_ids(tokenizer: Any, vocab_size: int) -> torch.Tensor:
    special = {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    special.discard(tokenizer.eos_token_id)
    return torch.tensor(sorted(special) + list(range(len(tokenizer), vocab_size)))


def allowed_ids(bitmask: torch.Tensor, row: int, vocab_size: int) -> torch.Tensor:
    shifts = torch.arange(32, dtype=torch.int32)
    bits = ((bitmask[row].unsqueeze(-1) >> shifts) & 1).bool().flatten()
    return bits.nonzero().flatten()


def drive(
    matcher: Matcher, tokenizer: Any, vocab_size: int, seed: int, max_steps: int = MAX_STEPS
) -> tuple[str, bool]:
    """Generate with the simulated model; returns (decoded text without EOS, terminated)."""
    rng = random.Random(seed)
    eos = tokenizer.eos_token_id
    closers = set(tokenizer.convert_tokens_to_ids(['"', "}", "]", ";"]))
    forbidden = forbidden_ids(tokenizer, vocab_size)
    bitmask = allocate_token_bitmask(2, vocab_size)
    tokens: list[int] = []
    for _ in range(max_steps):
        matcher.fill_bitmask(bitmask, 1)
        allowed = allowed_ids(bitmask, 1, vocab_size)
        assert allowed.numel() > 0, f"nothing allowed after {tokenizer.decode(tokens)!r}"
        assert not torch.isin(allowed, forbidden).any(), "a special or padded id is allowed"
        allowed_list = allowed.tolist()
        allowed_set = set(allowed_list)
        roll = rng.random()
        if eos in allowed_set and roll < 0.8:
            token = eos
        elif roll < 0.45:
            token = allowed_list[0]  # the lowest id: a single byte, often structural
        elif roll < 0.7 and closers & allowed_set:
            token = rng.choice(sorted(closers & allowed_set))
        else:
            token = rng.choice(allowed_list)
        assert matcher.accept_token(token), f"allowed token {token} was rejected"
        if matcher.is_terminated():
            assert token == eos
            return tokenizer.decode(tokens), True
        tokens.append(token)
    return tokenizer.decode(tokens), False


def compile_or_skip(
    backend: GuidedBackend,
    params: GuidedDecodingParams,
    unsupported: dict[str, set[str]],
    case: str,
) -> CompiledConstraint | None:
    """Compile; a backend may refuse only the cases the support matrix says it cannot do."""
    try:
        return backend.compile(params)
    except UnsupportedConstraintError as e:
        assert case in unsupported.get(backend.name, set()), f"unexpectedly unsupported: {e}"
        return None


# --- the params --------------------------------------------------------------------------


def test_two_constraints_are_an_error_naming_both() -> None:
    with pytest.raises(ValueError, match="json and regex"):
        GuidedDecodingParams(json={"type": "string"}, regex="a+")
    with pytest.raises(ValueError, match="choice and grammar"):
        GuidedDecodingParams(choice=["a"], grammar='root ::= "a"')


def test_params_validation() -> None:
    with pytest.raises(ValueError, match="needs one of"):
        GuidedDecodingParams()
    with pytest.raises(ValueError, match="needs one of"):
        GuidedDecodingParams(json_object=False)
    with pytest.raises(ValueError, match="not valid JSON"):
        GuidedDecodingParams(json="{nope")
    with pytest.raises(ValueError, match="choice"):
        GuidedDecodingParams(choice=[])
    with pytest.raises(ValueError, match="choice"):
        GuidedDecodingParams(choice="yes")
    with pytest.raises(ValueError, match="whitespace_pattern"):
        GuidedDecodingParams(regex="a+", whitespace_pattern=r"[ ]?")
    assert GuidedDecodingParams(json='{"type": "integer"}').json == {"type": "integer"}
    assert GuidedDecodingParams(json_object=True).kind == "json_object"


def test_pydantic_model_becomes_its_schema() -> None:
    from pydantic import BaseModel

    class Car(BaseModel):
        brand: str
        year: int

    params = GuidedDecodingParams(json=Car)
    assert params.json == Car.model_json_schema()


def test_cache_key_ignores_schema_key_order() -> None:
    a = GuidedDecodingParams(json={"type": "object", "required": ["x"]}, backend="xgrammar")
    b = GuidedDecodingParams(json='{"required": ["x"], "type": "object"}')
    assert a.cache_key() == b.cache_key()
    assert a.cache_key() != GuidedDecodingParams(json={"type": "object"}).cache_key()


# --- apply_token_bitmask -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_apply_token_bitmask_masks_only_the_given_rows(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    vocab, batch = 1000, 5
    logits = torch.randn(batch, vocab, dtype=dtype)
    bitmask = torch.randint(-(2**31), 2**31 - 1, (batch, (vocab + 31) // 32), dtype=torch.int32)
    rows = [0, 3]
    expected = logits.clone()
    for r in rows:
        for t in range(vocab):
            if not (int(bitmask[r, t // 32]) >> (t % 32)) & 1:
                expected[r, t] = float("-inf")
    fast, ref = logits.clone(), logits.clone()
    apply_token_bitmask(fast, bitmask, rows)
    apply_token_bitmask_ref(ref, bitmask, torch.tensor(rows))
    torch.testing.assert_close(fast, expected, rtol=0, atol=0)
    torch.testing.assert_close(ref, expected, rtol=0, atol=0)
    apply_token_bitmask(fast, bitmask, [])  # no constrained rows: nothing happens
    torch.testing.assert_close(fast, expected, rtol=0, atol=0)


def test_apply_token_bitmask_disallows_ids_past_the_bitmask() -> None:
    logits = torch.zeros(1, 40)
    bitmask = torch.full((1, 1), -1, dtype=torch.int32)  # covers ids 0..31
    apply_token_bitmask_ref(logits, bitmask, [0])
    assert torch.isinf(logits[0, 32:]).all() and not torch.isinf(logits[0, :32]).any()


# --- JSON schemas ------------------------------------------------------------------------

SCHEMAS: dict[str, dict[str, Any]] = {
    "nested_objects": {
        "type": "object",
        "properties": {
            "car": {
                "type": "object",
                "properties": {
                    "brand": {"type": "string", "maxLength": 12},
                    "engine": {
                        "type": "object",
                        "properties": {"cylinders": {"type": "integer"}},
                        "required": ["cylinders"],
                    },
                },
                "required": ["brand", "engine"],
            },
        },
        "required": ["car"],
    },
    "array_min_max_items": {
        "type": "object",
        "properties": {
            "tags": {
                "type": "array",
                "items": {"type": "string", "maxLength": 6},
                "minItems": 2,
                "maxItems": 3,
            }
        },
        "required": ["tags"],
    },
    "enum": {
        "type": "object",
        "properties": {"kind": {"enum": ["sedan", "suv", "truck"]}, "doors": {"enum": [2, 4]}},
        "required": ["kind", "doors"],
    },
    "integer_bounds": {
        "type": "object",
        "properties": {"age": {"type": "integer", "minimum": 18, "maximum": 99}},
        "required": ["age"],
    },
    "required_and_optional": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "name": {"type": "string", "maxLength": 8},
            "ok": {"type": "boolean"},
            "note": {"type": "null"},
        },
        "required": ["id"],
    },
    "defs_and_ref": {
        "$defs": {
            "point": {
                "type": "object",
                "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                "required": ["x", "y"],
            }
        },
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/point"}, "b": {"$ref": "#/$defs/point"}},
        "required": ["a", "b"],
    },
    "any_of": {
        "type": "object",
        "properties": {
            "value": {
                "anyOf": [
                    {"type": "integer"},
                    {"type": "boolean"},
                    {"type": "string", "maxLength": 5},
                ]
            }
        },
        "required": ["value"],
    },
    "string_pattern": {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"}},
        "required": ["code"],
    },
    "string_length": {
        "type": "object",
        "properties": {"word": {"type": "string", "minLength": 2, "maxLength": 4}},
        "required": ["word"],
    },
    "numbers": {
        "type": "object",
        "properties": {"price": {"type": "number"}, "count": {"type": "integer"}},
        "required": ["price", "count"],
    },
    "array_of_objects": {
        "type": "array",
        "items": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
        "minItems": 1,
        "maxItems": 2,
    },
    "format_date": {
        "type": "object",
        "properties": {"day": {"type": "string", "format": "date"}},
        "required": ["day"],
    },
}

# What each backend refuses (UnsupportedConstraintError) rather than silently not enforce.
UNSUPPORTED_SCHEMAS = {
    "outlines": {"integer_bounds", "format_date"},
    "lm-format-enforcer": {
        "integer_bounds",
        "format_date",
        "nested_objects",
        "any_of",
        "array_min_max_items",
        "required_and_optional",
        "string_length",
    },
}


@pytest.mark.parametrize("case", sorted(SCHEMAS))
def test_json_schema_outputs_validate(
    backend: GuidedBackend, tokenizer: Any, vocab_size: int, case: str
) -> None:
    schema = SCHEMAS[case]
    compiled = compile_or_skip(
        backend, GuidedDecodingParams(json=schema), UNSUPPORTED_SCHEMAS, case
    )
    if compiled is None:
        return
    for seed in SEEDS:
        text, terminated = drive(compiled.new_matcher(), tokenizer, vocab_size, seed)
        assert terminated, f"not finished in {MAX_STEPS} tokens: {text!r}"
        jsonschema.validate(
            json.loads(text), schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
        )


def test_json_object_gives_an_object(
    backend: GuidedBackend, tokenizer: Any, vocab_size: int
) -> None:
    if backend.name == "outlines":
        pytest.skip("outlines-core compiles any-JSON-object in ~13 s; covered by the matrix")
    compiled = backend.compile(GuidedDecodingParams(json_object=True))
    text, terminated = drive(compiled.new_matcher(), tokenizer, vocab_size, seed=3)
    assert terminated and isinstance(json.loads(text), dict)


# --- regexes and choices -----------------------------------------------------------------

OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
REGEXES = {
    "date": r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])",
    "email": r"[a-z0-9._%+-]{1,12}@[a-z0-9-]{1,12}\.[a-z]{2,4}",
    "ipv4": rf"({OCTET}\.){{3}}{OCTET}",
    "phone": r"\([0-9]{3}\) [0-9]{3}-[0-9]{4}",
}


@pytest.mark.parametrize("case", sorted(REGEXES))
def test_regex_outputs_fully_match(
    backend: GuidedBackend, tokenizer: Any, vocab_size: int, case: str
) -> None:
    regex = REGEXES[case]
    compiled = backend.compile(GuidedDecodingParams(regex=regex))
    for seed in SEEDS:
        text, terminated = drive(compiled.new_matcher(), tokenizer, vocab_size, seed)
        assert terminated and re.fullmatch(regex, text), text


CHOICES = ["Positive", "Negative", "Neutral", "a.b (c)?", 'say "hi"', "Pos"]


def test_choice_gives_exactly_one_choice(
    backend: GuidedBackend, tokenizer: Any, vocab_size: int
) -> None:
    compiled = backend.compile(GuidedDecodingParams(choice=CHOICES))
    seen = set()
    for seed in range(6):
        text, terminated = drive(compiled.new_matcher(), tokenizer, vocab_size, seed)
        assert terminated and text in CHOICES, text
        seen.add(text)
    assert len(seen) > 1


# --- grammars ----------------------------------------------------------------------------

SQL_EBNF = r"""
root ::= "SELECT " columns " FROM " table where? ";"
columns ::= "*" | column (", " column)*
column ::= "id" | "name" | "age" | "email"
table ::= "users" | "orders"
where ::= " WHERE " column " " op " " value
op ::= "=" | "<" | ">" | "<="
value ::= [0-9]+ | "'" [a-z]* "'"
"""
SQL_LARK = r"""
start: "SELECT " columns " FROM " table where? ";"
columns: "*" | column (", " column)*
column: "id" | "name" | "age" | "email"
table: "users" | "orders"
where: " WHERE " column " " op " " value
op: "=" | "<" | ">" | "<="
value: /[0-9]+/ | /'[a-z]*'/
"""
COLUMN = "(id|name|age|email)"
SQL_REGEX = (
    rf"SELECT (\*|{COLUMN}(, {COLUMN})*) FROM (users|orders)"
    rf"( WHERE {COLUMN} (=|<|>|<=) ([0-9]+|'[a-z]*'))?;"
)
GRAMMAR_BACKENDS = {"xgrammar"}


@pytest.mark.parametrize("grammar", [SQL_EBNF, SQL_LARK], ids=["ebnf", "lark"])
def test_sql_grammar_outputs_parse(
    backend: GuidedBackend, tokenizer: Any, vocab_size: int, grammar: str
) -> None:
    params = GuidedDecodingParams(grammar=grammar)
    if backend.name not in GRAMMAR_BACKENDS:
        with pytest.raises(UnsupportedConstraintError, match="grammar"):
            backend.compile(params)
        return
    compiled = backend.compile(params)
    for seed in range(4):
        text, terminated = drive(compiled.new_matcher(), tokenizer, vocab_size, seed)
        assert terminated and re.fullmatch(SQL_REGEX, text), text


# --- bad input ---------------------------------------------------------------------------

INVALID = {
    "unknown_type": GuidedDecodingParams(json={"type": "objekt"}),
    "dangling_ref": GuidedDecodingParams(
        json={"type": "object", "properties": {"a": {"$ref": "#/$defs/nope"}}}
    ),
    "bad_regex": GuidedDecodingParams(regex="a(b"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_constraint_is_a_value_error(backend: GuidedBackend, case: str) -> None:
    with pytest.raises(ValueError) as info:
        backend.compile(INVALID[case])
    assert not isinstance(info.value, UnsupportedConstraintError), info.value
    assert backend.name in str(info.value)


def test_invalid_grammar_is_a_value_error(backend: GuidedBackend) -> None:
    params = GuidedDecodingParams(grammar='root ::= "a" undefined_rule')
    expected = ValueError if backend.name in GRAMMAR_BACKENDS else UnsupportedConstraintError
    with pytest.raises(expected, match="undefined_rule|grammar"):
        backend.compile(params)


def test_whitespace_pattern_is_honoured_or_refused(
    backend: GuidedBackend, tokenizer: Any, vocab_size: int
) -> None:
    params = GuidedDecodingParams(json=SCHEMAS["numbers"], whitespace_pattern="")
    if backend.name != "outlines":
        with pytest.raises(UnsupportedConstraintError, match="whitespace_pattern"):
            backend.compile(params)
        return
    text, terminated = drive(backend.compile(params).new_matcher(), tokenizer, vocab_size, 0)
    assert terminated and not re.search(r"\s", text), text


# --- matcher state -----------------------------------------------------------------------


def masks_along(matcher: Matcher, tokens: list[int], vocab_size: int) -> list[torch.Tensor]:
    """The mask before each token and after the last, accepting the tokens on the way."""
    bitmask = allocate_token_bitmask(1, vocab_size)
    masks = []
    for token in tokens:
        matcher.fill_bitmask(bitmask, 0)
        masks.append(bitmask[0].clone())
        assert matcher.accept_token(token)
    matcher.fill_bitmask(bitmask, 0)
    masks.append(bitmask[0].clone())
    return masks


@pytest.mark.parametrize("replay", [False, True], ids=["native", "replay"])
def test_rollback_then_reaccept_gives_the_same_masks(
    backend: GuidedBackend,
    tokenizer: Any,
    vocab_size: int,
    replay: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if replay:
        if backend.name != "outlines":
            pytest.skip("only outlines falls back to replaying the history")
        monkeypatch.setattr(outlines_backend, "_MAX_ROLLBACK", 2)
    compiled = backend.compile(GuidedDecodingParams(json=SCHEMAS["defs_and_ref"]))
    text = '{"a": {"x": 12, "y": 3}, "b": {"x": 4, "y": 56}}'
    tokens = tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]
    matcher = compiled.new_matcher()
    masks = masks_along(matcher, tokens, vocab_size)
    assert matcher.is_terminated()
    for k in (1, 5, len(tokens)):
        matcher.rollback(k)
        assert not matcher.is_terminated()
        again = masks_along(matcher, tokens[-k:], vocab_size)
        for before, after in zip(masks[-k - 1 :], again, strict=True):
            assert torch.equal(before, after)
        assert matcher.is_terminated()
    with pytest.raises(ValueError):
        matcher.rollback(len(tokens) + 1)


def test_terminated_matcher_allows_only_eos_and_rejects_more(
    backend: GuidedBackend, tokenizer: Any, vocab_size: int
) -> None:
    matcher = backend.compile(GuidedDecodingParams(choice=["yes", "no"])).new_matcher()
    bitmask = allocate_token_bitmask(1, vocab_size)
    for token in tokenizer.encode("yes", add_special_tokens=False):
        assert matcher.accept_token(token)
    matcher.fill_bitmask(bitmask, 0)  # complete and nothing can follow: only EOS
    assert allowed_ids(bitmask, 0, vocab_size).tolist() == [tokenizer.eos_token_id]
    no = tokenizer.encode("no", add_special_tokens=False)[0]
    assert not matcher.accept_token(no)
    assert matcher.accept_token(tokenizer.eos_token_id) and matcher.is_terminated()
    matcher.fill_bitmask(bitmask, 0)
    assert allowed_ids(bitmask, 0, vocab_size).tolist() == [tokenizer.eos_token_id]
    assert not matcher.accept_token(tokenizer.eos_token_id)
    matcher.reset()
    assert not matcher.is_terminated() and matcher.accept_token(no)


def test_every_eos_id_ends_a_complete_match(tokenizer: Any, vocab_size: int) -> None:
    eos_ids = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    for ref in backend_refs().values():
        backend = load_reference(ref)(tokenizer, vocab_size, eos_token_ids=eos_ids)
        compiled = backend.compile(GuidedDecodingParams(regex="ab?"))
        for eos in eos_ids:
            matcher = compiled.new_matcher()
            bitmask = allocate_token_bitmask(1, vocab_size)
            assert matcher.accept_token(tokenizer.convert_tokens_to_ids("a"))
            matcher.fill_bitmask(bitmask, 0)
            assert set(eos_ids) <= set(allowed_ids(bitmask, 0, vocab_size).tolist())
            assert matcher.accept_token(eos) and matcher.is_terminated(), backend.name


def test_rejected_token_leaves_the_state_unchanged(
    backend: GuidedBackend, tokenizer: Any, vocab_size: int
) -> None:
    matcher = backend.compile(GuidedDecodingParams(regex="[0-9]{3}")).new_matcher()
    assert not matcher.accept_token(tokenizer.convert_tokens_to_ids("a"))
    assert not matcher.accept_token(tokenizer.eos_token_id)  # incomplete: EOS not allowed
    assert not matcher.accept_token(vocab_size - 1)  # a padded id
    text, terminated = drive(matcher, tokenizer, vocab_size, seed=0)
    assert terminated and re.fullmatch("[0-9]{3}", text)


def test_backends_satisfy_the_protocols(backend: GuidedBackend) -> None:
    assert isinstance(backend, GuidedBackend)
    compiled = backend.compile(GuidedDecodingParams(regex="x"))
    assert isinstance(compiled, CompiledConstraint)
    assert isinstance(compiled.new_matcher(), Matcher)


def test_plugin_registers_the_three_backends_lazily() -> None:
    refs = backend_refs()
    assert sorted(refs) == sorted(BACKENDS)
    assert all(isinstance(ref, str) and ":" in ref for ref in refs.values())
