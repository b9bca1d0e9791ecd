"""The built-in tool parsers, on hand-written outputs in each model family's real format.

Every well-formed output is also streamed, one character at a time and one token at a time
(the default model's tokenizer), and the deltas must rebuild exactly the non-streaming result:
the same content, the same calls in the same order, each call's argument fragments
concatenating to the non-streaming arguments text, with only a call's first delta carrying
its id, type and name.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from transformers import AutoTokenizer

from pagoda.interfaces import (
    DeltaMessage,
    ExtractedToolCallInformation,
    ToolParser,
)
from pagoda.plugin_manager import PluginManager

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer"},
                "precise": {"type": "boolean"},
                "threshold": {"type": "number"},
                "hours": {"type": "array"},
            },
            "required": ["location"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}


def make_request(tools: list[dict] | None = None) -> SimpleNamespace:
    """A stand-in for the server's chat request: parsers read only ``tools`` (and
    ``adjust_request`` sets ``skip_special_tokens``)."""
    return SimpleNamespace(
        tools=[WEATHER, TIME] if tools is None else tools,
        tool_choice="auto",
        skip_special_tokens=True,
    )


PARIS = {"location": "Paris", "unit": "celsius"}
SAO_PAULO = {"location": 'São Paulo, "SP"', "unit": "fahrenheit"}

DS_CALLS, DS_CALL, DS_SEP, DS_END, DS_CALLS_END = (
    "<｜tool▁calls▁begin｜>",
    "<｜tool▁call▁begin｜>",
    "<｜tool▁sep｜>",
    "<｜tool▁call▁end｜>",
    "<｜tool▁calls▁end｜>",
)

# name -> (parser, model output, expected calls [(name, arguments)], expected content)
CASES: dict[str, tuple[str, str, list[tuple[str, dict]], str | None]] = {
    "hermes_one": (
        "hermes",
        'I will check.\n<tool_call>\n{"name": "get_weather", "arguments": '
        '{"location": "Paris", "unit": "celsius"}}\n</tool_call>',
        [("get_weather", PARIS)],
        "I will check.\n",
    ),
    "hermes_parallel": (
        "hermes",
        '<tool_call>\n{"name": "get_weather", "arguments": {"location": "São Paulo, \\"SP\\"", '
        '"unit": "fahrenheit"}}\n</tool_call>\n<tool_call>\n{"name": "get_time", '
        '"arguments": {}}\n</tool_call>',
        [("get_weather", SAO_PAULO), ("get_time", {})],
        None,
    ),
    "hermes_arguments_first": (
        "hermes",
        '<tool_call>{"arguments": {"location": "Paris", "unit": "celsius"}, '
        '"name": "get_weather"}</tool_call>',
        [("get_weather", PARIS)],
        None,
    ),
    "llama3_json_plain": (
        "llama3_json",
        '{"name": "get_weather", "parameters": {"location": "Paris", "unit": "celsius"}}',
        [("get_weather", PARIS)],
        None,
    ),
    "llama3_json_python_tag_parallel": (
        "llama3_json",
        '<|python_tag|>{"name": "get_weather", "parameters": {"location": "Paris", '
        '"unit": "celsius"}}; {"name": "get_time", "parameters": {}}',
        [("get_weather", PARIS), ("get_time", {})],
        None,
    ),
    "mistral_list": (
        "mistral",
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"location": "Paris", '
        '"unit": "celsius"}}, {"name": "get_time", "arguments": {}}]',
        [("get_weather", PARIS), ("get_time", {})],
        None,
    ),
    "mistral_v11": (
        "mistral",
        'Sure.[TOOL_CALLS]get_weather[ARGS]{"location": "Paris", "unit": "celsius"}'
        "[TOOL_CALLS]get_time[ARGS]{}",
        [("get_weather", PARIS), ("get_time", {})],
        "Sure.",
    ),
    "pythonic": (
        "pythonic",
        '[get_weather(location=\'São Paulo, "SP"\', unit="fahrenheit"), get_time()]',
        [("get_weather", SAO_PAULO), ("get_time", {})],
        None,
    ),
    "pythonic_literals": (
        "pythonic",
        "[get_weather(location='Paris', days=3, precise=True, hours=[9, 12], "
        "threshold=None, extra={'a': (1, 2)})]",
        [
            (
                "get_weather",
                {
                    "location": "Paris",
                    "days": 3,
                    "precise": True,
                    "hours": [9, 12],
                    "threshold": None,
                    "extra": {"a": [1, 2]},
                },
            )
        ],
        None,
    ),
    "qwen3_coder_typed": (
        "qwen3_coder",
        "Let me look.\n<tool_call>\n<function=get_weather>\n<parameter=location>\nParis\n"
        "</parameter>\n<parameter=days>\n3\n</parameter>\n<parameter=precise>\nfalse\n"
        "</parameter>\n<parameter=threshold>\n0.5\n</parameter>\n<parameter=hours>\n[9, 12]\n"
        "</parameter>\n</function>\n</tool_call>",
        [
            (
                "get_weather",
                {
                    "location": "Paris",
                    "days": 3,
                    "precise": False,
                    "threshold": 0.5,
                    "hours": [9, 12],
                },
            )
        ],
        "Let me look.\n",
    ),
    "qwen3_coder_parallel": (
        "qwen3_coder",
        "<tool_call>\n<function=get_weather>\n<parameter=location>\n42\n</parameter>\n"
        "<parameter=unit>\ncelsius\n</parameter>\n</function>\n</tool_call>\n<tool_call>\n"
        "<function=get_time>\n</function>\n</tool_call>",
        [("get_weather", {"location": "42", "unit": "celsius"}), ("get_time", {})],
        None,
    ),
    "deepseek_v3": (
        "deepseek_v3",
        f"{DS_CALLS}{DS_CALL}function{DS_SEP}get_weather\n```json\n"
        '{"location": "Paris", "unit": "celsius"}\n```'
        f"{DS_END}\n{DS_CALL}function{DS_SEP}get_time\n```json\n{{}}\n```{DS_END}{DS_CALLS_END}",
        [("get_weather", PARIS), ("get_time", {})],
        None,
    ),
    "deepseek_v3_1": (
        "deepseek_v3",
        f'Checking.{DS_CALLS}{DS_CALL}get_weather{DS_SEP}{{"location": "Paris", '
        f'"unit": "celsius"}}{DS_END}{DS_CALLS_END}',
        [("get_weather", PARIS)],
        "Checking.",
    ),
    "granite_3_0": (
        "granite",
        '<|tool_call|>[{"name": "get_weather", "arguments": {"location": "Paris", '
        '"unit": "celsius"}}, {"name": "get_time", "arguments": {}}]',
        [("get_weather", PARIS), ("get_time", {})],
        None,
    ),
    "granite_3_1": (
        "granite",
        '<tool_call>[{"name": "get_weather", "arguments": {"location": "Paris", '
        '"unit": "celsius"}}]',
        [("get_weather", PARIS)],
        None,
    ),
    "internlm": (
        "internlm",
        'Let me check.<|action_start|><|plugin|>\n{"name": "get_weather", "parameters": '
        '{"location": "Paris", "unit": "celsius"}}<|action_end|>',
        [("get_weather", PARIS)],
        "Let me check.",
    ),
}

PLAIN = "The weather in Paris is mild: 18°C [1] and {sunny} <b>today</b>."

# name -> (parser, malformed output): no whole call, so all of it is content.
MALFORMED: dict[str, tuple[str, str]] = {
    "hermes_broken_json": (
        "hermes",
        '<tool_call>\n{"name": "get_weather", "arguments": {"location": Paris}}\n</tool_call>',
    ),
    "hermes_unknown_name": ("hermes", '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>'),
    "hermes_truncated": ("hermes", '<tool_call>{"name": "get_weather", "arguments": {"loc'),
    "hermes_no_name": ("hermes", '<tool_call>{"arguments": {}}</tool_call>'),
    "llama3_json_not_a_call": ("llama3_json", '{"answer": 42}'),
    "llama3_json_truncated": ("llama3_json", '{"name": "get_weather", "parameters": {'),
    "llama3_json_list_args": ("llama3_json", '{"name": "get_weather", "parameters": [1]}'),
    "mistral_broken": ("mistral", '[TOOL_CALLS][{"name": "get_weather", "arguments": {]'),
    "mistral_v11_unknown": ("mistral", "[TOOL_CALLS]launch[ARGS]{}"),
    "mistral_v11_no_args": ("mistral", "[TOOL_CALLS]get_weather{}"),
    "pythonic_positional": ("pythonic", "[get_weather('Paris')]"),
    "pythonic_not_literal": ("pythonic", "[get_weather(location=__import__('os'))]"),
    "pythonic_footnote": ("pythonic", "[1] The answer is 42."),
    "pythonic_truncated": ("pythonic", "[get_weather(location='Par"),
    "pythonic_unknown": ("pythonic", "[delete_all(force=True)]"),
    "qwen3_coder_unknown": (
        "qwen3_coder",
        "<tool_call>\n<function=nope>\n</function>\n</tool_call>",
    ),
    "qwen3_coder_truncated": ("qwen3_coder", "<tool_call>\n<function=get_weather>\n<parameter="),
    "qwen3_coder_garbage": ("qwen3_coder", "<tool_call>\nget_weather(Paris)\n</tool_call>"),
    "deepseek_v3_broken": (
        "deepseek_v3",
        f"{DS_CALLS}{DS_CALL}get_weather{DS_SEP}{{nope}}{DS_END}",
    ),
    "granite_not_a_list": ("granite", '<tool_call>{"name": "get_weather", "arguments": {}}'),
    "internlm_broken": ("internlm", "<|action_start|><|plugin|>\n{name: 1}<|action_end|>"),
}


@pytest.fixture(scope="module")
def parsers() -> dict[str, type[ToolParser]]:
    registry = PluginManager(allow=["tool_parsers"]).tool_parsers
    return {name: registry.get(name) for name in registry.names()}


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(tokenizer_dir)


def char_chunks(text: str, tokenizer: Any) -> list[str]:
    return list(text)


def token_chunks(text: str, tokenizer: Any) -> list[str]:
    """The deltas an incremental detokenizer emits: one per token, except that text ending
    in an incomplete UTF-8 sequence waits for the next token."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    chunks, emitted = [], ""
    for n in range(1, len(ids) + 1):
        decoded = tokenizer.decode(ids[:n])
        if decoded.endswith("\ufffd"):
            continue
        assert decoded.startswith(emitted)
        chunks.append(decoded[len(emitted) :])
        emitted = decoded
    assert emitted == text
    return chunks


def stream(parser: ToolParser, chunks: list[str], request: Any) -> dict[str, Any]:
    """Feed the chunks as streaming steps; rebuild content and calls from the deltas,
    checking the OpenAI delta rules on the way."""
    text, ids, content = "", [], ""
    calls: list[dict[str, Any]] = []
    for i, chunk in enumerate(chunks):
        delta = parser.extract_tool_calls_streaming(
            text, text + chunk, chunk, ids, ids + [i], [i], request
        )
        text, ids = text + chunk, ids + [i]
        if delta is None:
            continue
        assert isinstance(delta, DeltaMessage)
        content += delta.content or ""
        for call in delta.tool_calls:
            if call.index == len(calls):
                assert call.id and call.type == "function" and call.function.name
                calls.append(
                    {
                        "id": call.id,
                        "name": call.function.name,
                        "arguments": call.function.arguments or "",
                    }
                )
            else:
                assert call.index < len(calls), "indexes grow by one per new call"
                assert call.id is None and call.type is None and call.function.name is None
                calls[call.index]["arguments"] += call.function.arguments or ""
    return {"content": content or None, "calls": calls}


@pytest.mark.parametrize("case", sorted(CASES))
def test_extracts_the_calls_of_each_family(case: str, parsers: dict) -> None:
    name, text, expected, content = CASES[case]
    result = parsers[name](None).extract_tool_calls(text, make_request())
    assert isinstance(result, ExtractedToolCallInformation)
    assert result.tools_called
    assert [(c.function.name, json.loads(c.function.arguments)) for c in result.tool_calls] == (
        expected
    )
    assert all(c.type == "function" and c.id for c in result.tool_calls)
    assert len({c.id for c in result.tool_calls}) == len(result.tool_calls)
    assert result.content == content


@pytest.mark.parametrize("split", [char_chunks, token_chunks], ids=["chars", "tokens"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_streaming_rebuilds_the_non_streaming_result(
    case: str, split: Any, parsers: dict, tokenizer: Any
) -> None:
    name, text, _, _ = CASES[case]
    request = make_request()
    whole = parsers[name](tokenizer).extract_tool_calls(text, request)
    streamed = stream(parsers[name](tokenizer), split(text, tokenizer), request)
    assert streamed["content"] == whole.content
    assert [(c["name"], c["arguments"]) for c in streamed["calls"]] == [
        (c.function.name, c.function.arguments) for c in whole.tool_calls
    ]


@pytest.mark.parametrize("name", sorted({case[0] for case in CASES.values()}))
def test_text_without_calls_is_content_streaming_or_not(name: str, parsers: dict) -> None:
    result = parsers[name](None).extract_tool_calls(PLAIN, make_request())
    assert result == ExtractedToolCallInformation(tools_called=False, content=PLAIN)
    streamed = stream(parsers[name](None), list(PLAIN), make_request())
    assert streamed == {"content": PLAIN, "calls": []}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_output_is_plain_content(case: str, parsers: dict) -> None:
    name, text = MALFORMED[case]
    result = parsers[name](None).extract_tool_calls(text, make_request())
    assert result == ExtractedToolCallInformation(tools_called=False, content=text)
    for chunks in (list(text), [text]):
        streamed = stream(parsers[name](None), chunks, make_request())
        assert all(c["name"] in ("get_weather", "get_time") for c in streamed["calls"])


@pytest.mark.parametrize(
    "name, text",
    [
        (
            "hermes",
            '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>\n'
            '<tool_call>{"name": "get_weather", "arguments": {"location": "Par',
        ),
        ("llama3_json", '{"name": "get_time", "parameters": {}}; {"name": "get_weather", "par'),
        ("mistral", '[TOOL_CALLS]get_time[ARGS]{}[TOOL_CALLS]get_weather[ARGS]{"loc'),
        ("pythonic", "[get_time(), get_weather(location='Paris', unit="),
        (
            "qwen3_coder",
            "<tool_call>\n<function=get_time>\n</function>\n</tool_call>\n"
            "<tool_call>\n<function=get_weather>\n<parameter=location>\nPar",
        ),
        ("deepseek_v3", f"{DS_CALLS}{DS_CALL}get_time{DS_SEP}{{}}{DS_END}{DS_CALL}get_weather"),
        ("granite", '<tool_call>[{"name": "get_time", "arguments": {}}, {"name": "get_wea'),
        (
            "internlm",
            '<|action_start|><|plugin|>\n{"name": "get_time", "parameters": {}}'
            '<|action_end|><|action_start|><|plugin|>\n{"name": "get_weather"',
        ),
    ],
)
def test_a_truncated_call_after_a_whole_one_is_dropped(name: str, text: str, parsers: dict):
    result = parsers[name](None).extract_tool_calls(text, make_request())
    assert [(c.function.name, c.function.arguments) for c in result.tool_calls] == [
        ("get_time", "{}")
    ]


@pytest.mark.parametrize("name", ["hermes", "pythonic", "qwen3_coder", "mistral"])
def test_any_name_is_accepted_when_the_request_lists_no_tools(name: str, parsers: dict):
    text = {
        "hermes": '<tool_call>{"name": "anything", "arguments": {"x": 1}}</tool_call>',
        "pythonic": "[anything(x=1)]",
        "qwen3_coder": "<tool_call>\n<function=anything>\n<parameter=x>\n1\n</parameter>\n"
        "</function>\n</tool_call>",
        "mistral": '[TOOL_CALLS]anything[ARGS]{"x": 1}',
    }[name]
    for request in (make_request(tools=[]), None):
        result = parsers[name](None).extract_tool_calls(text, request)
        assert [(c.function.name, json.loads(c.function.arguments)) for c in result.tool_calls] == [
            ("anything", {"x": 1})
        ]


def test_streamed_arguments_arrive_in_fragments(parsers: dict) -> None:
    """Arguments stream while generated, not only once a call is complete."""
    _, text, _, _ = CASES["hermes_one"]
    parser = parsers["hermes"](None)
    fragments = 0
    for n in range(1, len(text) + 1):
        delta = parser.extract_tool_calls_streaming(
            text[: n - 1], text[:n], text[n - 1], [], [], [], make_request()
        )
        fragments += bool(delta and delta.tool_calls and delta.tool_calls[0].id is None)
    assert fragments > 10


def test_qwen3_coder_keeps_a_value_that_does_not_fit_its_type_as_text(parsers: dict) -> None:
    text = (
        "<tool_call>\n<function=get_weather>\n<parameter=location>\nParis\n</parameter>\n"
        '<parameter=days>\nthree\n</parameter>\n<parameter=other>\n{"a": 1}\n</parameter>\n'
        "</function>\n</tool_call>"
    )
    result = parsers["qwen3_coder"](None).extract_tool_calls(text, make_request())
    assert json.loads(result.tool_calls[0].function.arguments) == {
        "location": "Paris",
        "days": "three",
        "other": {"a": 1},
    }


def test_mistral_ids_are_nine_alphanumerics(parsers: dict) -> None:
    _, text, _, _ = CASES["mistral_v11"]
    result = parsers["mistral"](None).extract_tool_calls(text, make_request())
    assert all(len(c.id) == 9 and c.id.isalnum() for c in result.tool_calls)


@pytest.mark.parametrize(
    "name, keeps", [("mistral", True), ("llama3_json", True), ("hermes", False)]
)
def test_adjust_request_keeps_special_token_markers(name: str, keeps: bool, parsers: dict):
    request = parsers[name](None).adjust_request(make_request())
    assert request.skip_special_tokens is (not keeps)


def test_every_built_in_parser_is_registered_lazily() -> None:
    registry = PluginManager(allow=["tool_parsers"]).tool_parsers
    assert registry.names() == sorted(
        [
            "hermes",
            "llama3_json",
            "mistral",
            "pythonic",
            "qwen3_coder",
            "deepseek_v3",
            "granite",
            "internlm",
        ]
    )
    assert all(isinstance(e.value, str) for e in registry.entries())
    assert all(issubclass(registry.get(n), ToolParser) for n in registry.names())
