"""Structured outputs over HTTP: one `pagoda serve` subprocess with the default model, driven
by the real `openai` client (extra_body for vLLM's guided_* fields) and raw HTTP."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest
import requests
from pydantic import BaseModel
from test_server import Server, running_server

MODEL = "smollm2"
MAX_TOKENS = 120


class CarType(str, Enum):
    sedan = "sedan"
    suv = "SUV"
    truck = "Truck"
    coupe = "Coupe"


class CarDescription(BaseModel):
    brand: str
    model: str
    car_type: CarType


CAR_PROMPT = (
    "Generate a JSON with the brand, model and car_type of the most iconic car from the 90's"
)
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 10},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
    },
    "required": ["name", "age"],
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with running_server(["--max-num-seqs", "32"], log) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return server.client()


@pytest.fixture(scope="module")
def steer(tokenizer_dir: Path) -> dict[str, Any]:
    """Sampling extras that keep the small greedy model's constrained JSON short: a logit_bias
    against whitespace-only tokens (JSON whitespace is optional, so the constraint is the
    same) and a repetition penalty against runaway digits."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    bias = {}
    for i in range(len(tok)):
        text = tok.decode([i])
        if text and not text.strip() and text != " ":
            bias[str(i)] = -100
    return {"logit_bias": bias, "extra": {"repetition_penalty": 1.3}}


def chat(
    client: openai.OpenAI, steer: dict[str, Any], content: str, body: dict[str, Any], **kw: Any
) -> Any:
    return client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": content}],
        temperature=0,
        max_tokens=MAX_TOKENS,
        logit_bias=steer["logit_bias"],
        extra_body={**steer["extra"], **body},
        **kw,
    )


def finished_json(choice: Any) -> Any:
    assert choice.finish_reason == "stop", choice
    return json.loads(choice.message.content)


def test_car_description_guided_json_validates(
    client: openai.OpenAI, steer: dict[str, Any]
) -> None:
    schema = CarDescription.model_json_schema()
    out = chat(client, steer, CAR_PROMPT, {"guided_json": schema})
    value = finished_json(out.choices[0])
    jsonschema.validate(value, schema)
    CarDescription.model_validate(value)


PET = {  # every backend takes this one
    "type": "object",
    "properties": {"kind": {"enum": ["cat", "dog"]}, "ok": {"type": "boolean"}},
    "required": ["kind", "ok"],
}


@pytest.mark.parametrize("backend", ["xgrammar", "outlines", "lm-format-enforcer"])
def test_guided_json_per_request_backend(
    client: openai.OpenAI, steer: dict[str, Any], backend: str
) -> None:
    out = chat(
        client,
        steer,
        "A pet as JSON.",
        {"guided_json": json.dumps(PET), "guided_decoding_backend": backend},
    )
    jsonschema.validate(finished_json(out.choices[0]), PET)


def test_response_format_json_schema(client: openai.OpenAI, steer: dict[str, Any]) -> None:
    out = chat(
        client,
        steer,
        "A person as JSON.",
        {},
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": PERSON, "strict": True},
        },
    )
    jsonschema.validate(finished_json(out.choices[0]), PERSON)


def test_response_format_json_object(client: openai.OpenAI, steer: dict[str, Any]) -> None:
    out = chat(
        client,
        steer,
        "Describe a cat as a JSON object.",
        {},
        response_format={"type": "json_object"},
    )
    assert isinstance(finished_json(out.choices[0]), dict)


def test_structured_outputs_field(client: openai.OpenAI, steer: dict[str, Any]) -> None:
    out = chat(
        client,
        steer,
        "Is the sky blue? Answer yes or no.",
        {"structured_outputs": {"choice": ["yes", "no"]}},
    )
    assert out.choices[0].message.content in ("yes", "no")
    date = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    out = chat(
        client,
        steer,
        "When did the Berlin wall fall?",
        {"structured_outputs": {"regex": date, "backend": "outlines"}},
    )
    assert re.fullmatch(date, out.choices[0].message.content)
    out = chat(client, steer, "A pet as JSON.", {"structured_outputs": {"json": PET}})
    jsonschema.validate(finished_json(out.choices[0]), PET)


def test_protocol_imports_without_warnings() -> None:
    """pydantic warned that StructuredOutputs' "json" field shadows BaseModel.json."""
    code = "import pagoda.server.protocol"
    subprocess.run([sys.executable, "-W", "error", "-c", code], check=True)


def test_guided_regex_and_choice_on_completions(client: openai.OpenAI) -> None:
    octet = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
    ipv4 = rf"({octet}\.){{3}}{octet}"
    out = client.completions.create(
        model=MODEL,
        prompt="The router's IP address is ",
        temperature=0,
        max_tokens=40,
        extra_body={"guided_regex": ipv4},
    )
    assert re.fullmatch(ipv4, out.choices[0].text), out.choices[0].text
    out = client.completions.create(
        model=MODEL,
        prompt="Sentiment of 'great film!':",
        temperature=0,
        max_tokens=10,
        extra_body={"guided_choice": ["positive", "negative"]},
    )
    assert out.choices[0].text in ("positive", "negative")


def test_streaming_matches_non_streaming(client: openai.OpenAI, steer: dict[str, Any]) -> None:
    body = {"guided_json": PERSON}
    whole = chat(client, steer, "A person as JSON.", body).choices[0].message.content
    stream = chat(client, steer, "A person as JSON.", body, stream=True)
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(pieces) == whole
    jsonschema.validate(json.loads(whole), PERSON)


BAD = {
    "invalid_schema": ({"guided_json": {"type": "objekt"}}, "json"),
    "invalid_regex": ({"guided_regex": "a(b"}, "regex"),
    "two_constraints": ({"guided_json": PERSON, "guided_regex": "[0-9]+"}, "guided_regex"),
    "backend_without_constraint": ({"guided_decoding_backend": "xgrammar"}, "constraint"),
    "whitespace_without_constraint": ({"guided_whitespace_pattern": " "}, "constraint"),
    "grammar_backend_cannot_express": (
        {"guided_grammar": 'root ::= "a"', "guided_decoding_backend": "outlines"},
        "grammar",
    ),
    "unknown_backend": ({"guided_regex": "[0-9]+", "guided_decoding_backend": "nope"}, "nope"),
    "schema_and_response_format": (
        {"guided_json": PERSON, "response_format": {"type": "json_object"}},
        "response_format",
    ),
}


def test_bad_constraints_are_400_and_others_undisturbed(
    server: Server, client: openai.OpenAI, steer: dict[str, Any]
) -> None:
    good: dict[str, Any] = {}

    def run_good() -> None:
        good["out"] = chat(client, steer, "A person as JSON.", {"guided_json": PERSON})

    thread = threading.Thread(target=run_good)
    thread.start()
    problems = []
    for case, (body, word) in BAD.items():
        resp = requests.post(
            f"{server.url}/v1/chat/completions",
            timeout=120,
            json={
                "model": MODEL,
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 8,
                **body,
            },
        )
        text = resp.text
        if resp.status_code != 400 or word.lower() not in text.lower():
            problems.append(f"{case}: {resp.status_code} {text[:300]}")
    thread.join(timeout=300)
    assert not problems, "\n".join(problems)
    jsonschema.validate(finished_json(good["out"].choices[0]), PERSON)
    # The server still serves constrained and plain requests afterwards.
    plain = client.chat.completions.create(
        model=MODEL, temperature=0, max_tokens=8, messages=[{"role": "user", "content": "hi"}]
    )
    assert plain.choices[0].message.content
