"""Structured outputs end to end through the real default model (offline ``LLM``), for each
guided-decoding backend: JSON schemas validated by ``jsonschema``, regexes fully matched,
choices, an SQL grammar, a mixed batch, n=2 and preemption.

Every request of one backend goes into a single ``generate`` call (the CPU has 2 cores), greedy.
A constraint a backend refuses with ``UnsupportedConstraintError`` is skipped for that backend
only; xgrammar must take every one.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
from test_guided_backends import REGEXES, SCHEMAS, SQL_EBNF, SQL_REGEX

from pagoda import LLM, SamplingParams
from pagoda.interfaces.guided import GuidedDecodingParams, UnsupportedConstraintError

BACKENDS = ["xgrammar", "outlines", "lm-format-enforcer"]
MAX_TOKENS = 120

# 12 schemas from the backend unit tests plus these, 24 in all; outputs are short.
EXTRA_SCHEMAS: dict[str, dict[str, Any]] = {
    "car_description": {
        "type": "object",
        "properties": {
            "brand": {"type": "string", "maxLength": 12},
            "model": {"type": "string", "maxLength": 12},
            "car_type": {"enum": ["sedan", "SUV", "Truck", "Coupe"]},
        },
        "required": ["brand", "model", "car_type"],
    },
    "number_bounds": {
        "type": "object",
        "properties": {
            "ratio": {"type": "number", "minimum": 0, "maximum": 1},
            "temp": {"type": "number", "minimum": -10, "maximum": 40},
        },
        "required": ["ratio", "temp"],
    },
    "array_of_enums": {
        "type": "object",
        "properties": {
            "colors": {
                "type": "array",
                "items": {"enum": ["red", "green", "blue"]},
                "minItems": 1,
                "maxItems": 3,
            }
        },
        "required": ["colors"],
    },
    "nested_arrays": {
        "type": "object",
        "properties": {
            "grid": {
                "type": "array",
                "minItems": 1,
                "maxItems": 2,
                "items": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 2,
                    "items": {"type": "integer", "minimum": 0, "maximum": 9},
                },
            }
        },
        "required": ["grid"],
    },
    "ref_in_array": {
        "$defs": {
            "item": {
                "type": "object",
                "properties": {
                    "sku": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{2}$"},
                    "qty": {"type": "integer", "minimum": 1, "maximum": 5},
                },
                "required": ["sku", "qty"],
            }
        },
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "items": {"$ref": "#/$defs/item"},
                "minItems": 1,
                "maxItems": 2,
            }
        },
        "required": ["items"],
    },
    "any_of_objects": {
        "type": "object",
        "properties": {
            "shape": {
                "anyOf": [
                    {"type": "object", "properties": {"r": {"type": "integer"}}, "required": ["r"]},
                    {
                        "type": "object",
                        "properties": {"w": {"type": "integer"}, "h": {"type": "integer"}},
                        "required": ["w", "h"],
                    },
                ]
            }
        },
        "required": ["shape"],
    },
    "boolean_and_null": {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}, "err": {"type": "null"}},
        "required": ["ok", "err"],
    },
    "const_and_enum_mixed": {
        "type": "object",
        "properties": {"version": {"const": 2}, "level": {"enum": ["low", 1, True, None]}},
        "required": ["version", "level"],
    },
    "format_ipv4": {
        "type": "object",
        "properties": {"host": {"type": "string", "format": "ipv4"}},
        "required": ["host"],
    },
    "string_enum_top_level": {"type": "string", "enum": ["alpha", "beta", "gamma"]},
    "integer_top_level": {"type": "integer", "minimum": 100, "maximum": 999},
    "person_optional": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 10},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "city": {"type": "string", "maxLength": 10},
        },
        "required": ["name", "age"],
        "additionalProperties": False,
    },
}
ALL_SCHEMAS = {**SCHEMAS, **EXTRA_SCHEMAS}
assert len(ALL_SCHEMAS) >= 20

# Short raw prompts keep the 2-core CPU run short; they prime compact JSON.
PROMPTS = [
    'Reply in compact one-line JSON, like {"id":1,"ok":true}\n',
    'Example of minified JSON: {"a":[1,2],"b":"x"}\nAnother one:\n',
]
CHOICES = ["Positive", "Negative", "Neutral"]
CHOICE_PROMPT = "Is this review positive or negative? 'I loved the film, it was wonderful.'"
REGEX_PROMPTS = {
    "date": "The date of the moon landing: ",
    "email": "John's email address at example.com: ",
    "ipv4": "The IP address of a home router: ",
    "phone": "A US phone number: ",
}
SQL_PROMPT = "An SQL query that selects the names of all users:\n"
UNCONSTRAINED = ["What is the capital of France?", "Write a haiku about the sea."]


_WHITESPACE_BIAS: dict[int, float] = {}


def whitespace_bias(llm: LLM) -> dict[int, float]:
    """logit_bias against whitespace-only tokens (a lone space excepted). JSON whitespace is
    always optional, so the constraint is unchanged; without it the small greedy model can
    emit whitespace until max_tokens (xgrammar takes no whitespace_pattern)."""
    if not _WHITESPACE_BIAS:
        tok = llm.get_tokenizer()
        for i in range(len(tok)):
            text = tok.decode([i])
            if text and not text.strip() and text != " ":
                _WHITESPACE_BIAS[i] = -100.0
    return _WHITESPACE_BIAS


def greedy(guided: GuidedDecodingParams | None = None, **kw: Any) -> SamplingParams:
    return SamplingParams(temperature=0, max_tokens=MAX_TOKENS, guided_decoding=guided, **kw)


def constrained(llm: LLM, guided: GuidedDecodingParams, **kw: Any) -> SamplingParams:
    """Greedy and constrained, steered away from runaway whitespace and digits."""
    kw.setdefault("temperature", 0)
    return SamplingParams(
        max_tokens=MAX_TOKENS,
        guided_decoding=guided,
        repetition_penalty=1.3,
        logit_bias=whitespace_bias(llm),
        **kw,
    )


@pytest.fixture(scope="module")
def llm() -> LLM:
    return LLM(dtype="float32", kv_cache_memory=128 << 20)


def supported(llm: LLM, params: GuidedDecodingParams, backend: str) -> bool:
    """Compile (cached by the engine); False if the backend refuses the constraint."""
    try:
        llm.llm_engine.guided.compile(params)
    except UnsupportedConstraintError:
        if backend == "xgrammar":
            raise
        return False
    return True


_RUNS: dict[str, dict[str, Any]] = {}


def run_backend(llm: LLM, backend: str) -> dict[str, Any]:
    """One generate call with every case of one backend; cached per backend."""
    if backend in _RUNS:
        return _RUNS[backend]
    cases: list[tuple[str, str, Any]] = []  # (kind, name, expectation)
    prompts: list[str] = []
    params: list[SamplingParams] = []

    def add(kind: str, name: str, expect: Any, prompt: str, g: GuidedDecodingParams | None) -> None:
        cases.append((kind, name, expect))
        prompts.append(prompt)
        params.append(constrained(llm, g) if g is not None else greedy())

    skipped = []
    for name, schema in ALL_SCHEMAS.items():
        g = GuidedDecodingParams(json=schema, backend=backend)
        if not supported(llm, g, backend):
            skipped.append(name)
            continue
        for template in PROMPTS:
            add("json", name, schema, template, g)
    for name, regex in REGEXES.items():
        g = GuidedDecodingParams(regex=regex, backend=backend)
        if supported(llm, g, backend):
            add("regex", name, regex, REGEX_PROMPTS[name], g)
            add("regex", name, regex, f"Reply with text matching {regex}", g)
    g = GuidedDecodingParams(choice=CHOICES, backend=backend)
    assert supported(llm, g, backend)
    add("choice", "choice", CHOICES, CHOICE_PROMPT + "\nAnswer: ", g)
    add("choice", "choice", CHOICES, "Pick one: Positive, Negative or Neutral.", g)
    g = GuidedDecodingParams(grammar=SQL_EBNF, backend=backend)
    if supported(llm, g, backend):
        add("sql", "sql", SQL_REGEX, SQL_PROMPT, g)
    # A mixed batch: unconstrained requests alongside the constrained ones.
    for q in UNCONSTRAINED:
        add("free", q, None, q, None)
    # n=2, seeded sampling, constrained.
    n2 = GuidedDecodingParams(json=SCHEMAS["enum"], backend=backend)
    cases.append(("n2", "enum", SCHEMAS["enum"]))
    prompts.append("A car as compact JSON:\n")
    params.append(constrained(llm, n2, n=2, temperature=0.8, seed=7))
    outputs = llm.generate(prompts, params, use_tqdm=False)
    _RUNS[backend] = {"cases": cases, "outputs": outputs, "skipped": skipped}
    return _RUNS[backend]


@pytest.fixture(scope="module")
def alone(llm: LLM) -> list[str]:
    """The unconstrained prompts' greedy outputs in a batch of their own."""
    outs = llm.generate(UNCONSTRAINED, greedy(), use_tqdm=False)
    return [o.outputs[0].text for o in outs]


# JSON Schema's "ipv4" is RFC 2673's dotted-quad (1-3 digits per part, value <= 255, leading
# zeros allowed); Python's ipaddress (behind jsonschema's checker) rejects leading zeros.
FORMATS = jsonschema.FormatChecker()
FORMATS.checks("ipv4")(
    lambda v: (
        not isinstance(v, str)
        or bool(re.fullmatch(r"[0-9]{1,3}(\.[0-9]{1,3}){3}", v))
        and all(int(p) <= 255 for p in v.split("."))
    )
)


def validation_error(text: str, schema: dict[str, Any]) -> str | None:
    try:
        jsonschema.validate(json.loads(text), schema, format_checker=FORMATS)
    except (json.JSONDecodeError, jsonschema.ValidationError) as e:
        return str(e).splitlines()[0]
    return None


def check_finished(out: Any, text: str) -> None:
    assert out.finish_reason == "stop", f"{out.finish_reason} (raise MAX_TOKENS?): {text!r}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_json_schema_outputs_validate(llm: LLM, backend: str) -> None:
    run = run_backend(llm, backend)
    if backend == "xgrammar":
        assert not run["skipped"]
    checked, failures = 0, []
    for (kind, name, schema), out in zip(run["cases"], run["outputs"], strict=True):
        if kind != "json":
            continue
        comp = out.outputs[0]
        checked += 1
        if comp.finish_reason != "stop":
            failures.append(f"{name}: {comp.finish_reason}: {comp.text!r}")
        elif (error := validation_error(comp.text, schema)) is not None:
            failures.append(f"{name}: {error}: {comp.text!r}")
    assert not failures, f"{backend}:\n" + "\n".join(failures)
    # Every supported schema ran with both prompts.
    assert checked == 2 * (len(ALL_SCHEMAS) - len(run["skipped"]))
    assert checked >= 2 * 5, run["skipped"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_regex_outputs_fully_match(llm: LLM, backend: str) -> None:
    run = run_backend(llm, backend)
    seen = set()
    for (kind, name, regex), out in zip(run["cases"], run["outputs"], strict=True):
        if kind == "regex":
            comp = out.outputs[0]
            check_finished(comp, comp.text)
            assert re.fullmatch(regex, comp.text), (name, comp.text)
            seen.add(name)
    assert seen == set(REGEXES)


@pytest.mark.parametrize("backend", BACKENDS)
def test_choice_is_exactly_one_choice(llm: LLM, backend: str) -> None:
    run = run_backend(llm, backend)
    found = 0
    for (kind, _, choices), out in zip(run["cases"], run["outputs"], strict=True):
        if kind == "choice":
            comp = out.outputs[0]
            check_finished(comp, comp.text)
            assert comp.text in choices, comp.text
            found += 1
    assert found == 2


def test_sql_grammar_xgrammar(llm: LLM) -> None:
    run = run_backend(llm, "xgrammar")
    sql = [
        out for (kind, *_), out in zip(run["cases"], run["outputs"], strict=True) if kind == "sql"
    ]
    assert len(sql) == 1
    comp = sql[0].outputs[0]
    check_finished(comp, comp.text)
    assert re.fullmatch(SQL_REGEX, comp.text), comp.text


@pytest.mark.parametrize("backend", BACKENDS)
def test_mixed_batch_unconstrained_outputs_match_alone(
    llm: LLM, backend: str, alone: list[str]
) -> None:
    run = run_backend(llm, backend)
    free = [
        out.outputs[0].text
        for (kind, *_), out in zip(run["cases"], run["outputs"], strict=True)
        if kind == "free"
    ]
    assert free == alone


@pytest.mark.parametrize("backend", BACKENDS)
def test_n2_constrained(llm: LLM, backend: str) -> None:
    run = run_backend(llm, backend)
    (out,) = [o for (kind, *_), o in zip(run["cases"], run["outputs"], strict=True) if kind == "n2"]
    assert len(out.outputs) == 2
    for comp in out.outputs:
        check_finished(comp, comp.text)
        jsonschema.validate(json.loads(comp.text), SCHEMAS["enum"])


def test_preemption_keeps_outputs_valid(llm: LLM) -> None:
    """A KV cache too small for the batch: requests are preempted and recomputed, and their
    matchers must follow; every output still validates."""
    small = LLM(dtype="float32", num_gpu_blocks_override=6)
    schema = EXTRA_SCHEMAS["person_optional"]
    g = GuidedDecodingParams(json=schema, backend="xgrammar")
    names = ["Ann", "Bob", "Cid", "Dee", "Eve", "Fay"]
    prompts = [f"The person {n} as compact JSON (name, age, city):\n" for n in names]
    outs = small.generate(prompts, constrained(small, g), use_tqdm=False)
    sched = small.llm_engine.scheduler
    assert sched.num_preemptions > 0, "the KV cache was big enough: no preemption happened"
    for o in outs:
        comp = o.outputs[0]
        check_finished(comp, comp.text)
        jsonschema.validate(json.loads(comp.text), schema)
    # The same prompts with a roomy cache give the same greedy constrained outputs.
    ref = llm.generate(prompts, constrained(llm, g), use_tqdm=False)
    assert [o.outputs[0].text for o in outs] == [o.outputs[0].text for o in ref]
