"""Tool calls and reasoning outputs through `pagoda serve` and the real `openai` client.

The model is the scripted test plugin (tests/scripted_model): whatever the prompt, it writes a
known text, tokenized with the default model's tokenizer extended with each family's marker
tokens (special ones, like ``<|python_tag|>``, reach the parser only because its
``adjust_request`` keeps special tokens). So template, generation, detokenizer, parsers and
streaming deltas are checked exactly, for every built-in tool and reasoning parser, streaming
and not: a call's argument fragments concatenate to exactly the non-streaming arguments.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
import requests
from scripted_model.checkpoint import write_scripted_checkpoint
from test_server import Server, assert_openai_error, running_server, start_server, stop_server
from transformers import AutoTokenizer

import pagoda
from pagoda.registry import RegistryError
from pagoda.sampling_params import SamplingParams

REPO = Path(__file__).resolve().parent.parent
SERVE = [sys.executable, str(REPO / "tests" / "scripted_model" / "serve.py")]
EXAMPLES = REPO / "examples"
DOCS_PARSER = REPO / "docs" / "examples" / "my_tool_parser.py"

# Marker tokens of the families, added to the test tokenizer as their models have them.
SPECIAL_TOKENS = [
    "<|python_tag|>",
    "[TOOL_CALLS]",
    "[ARGS]",
    "[THINK]",
    "[/THINK]",
    "<|tool_call|>",
    "<|action_start|>",
    "<|plugin|>",
    "<|action_end|>",
    "<｜tool▁calls▁begin｜>",
    "<｜tool▁calls▁end｜>",
    "<｜tool▁call▁begin｜>",
    "<｜tool▁call▁end｜>",
    "<｜tool▁sep｜>",
]
PLAIN_TOKENS = ["<think>", "</think>", "<tool_call>", "</tool_call>"]

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "City and country"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location", "unit"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}
TOOLS = [WEATHER, TIME]
QUESTION = [{"role": "user", "content": "What's the weather like in Paris today?"}]
PARIS = {"location": "Paris", "unit": "celsius"}
DS = {
    "calls": "<｜tool▁calls▁begin｜>",
    "call": "<｜tool▁call▁begin｜>",
    "sep": "<｜tool▁sep｜>",
    "end": "<｜tool▁call▁end｜>",
    "calls_end": "<｜tool▁calls▁end｜>",
}


@dataclass
class Case:
    """One server configuration and the scripted output it must parse."""

    flags: list[str]
    output: str
    calls: list[tuple[str, dict[str, Any]]]
    content: str | None
    reasoning: str | None = None
    id_shape: str = "call_"
    extra: dict[str, Any] = field(default_factory=dict)


def _flags(parser: str, template: str, reasoning: str | None = None) -> list[str]:
    flags = ["--enable-auto-tool-choice", "--tool-call-parser", parser]
    flags += ["--chat-template", str(EXAMPLES / f"tool_chat_template_{template}.jinja")]
    return flags + (["--reasoning-parser", reasoning] if reasoning else [])


# One case per built-in tool parser; the reasoning parsers ride along with their families.
CASES: dict[str, Case] = {
    "hermes+qwen3": Case(
        _flags("hermes", "hermes", "qwen3"),
        "<think>The user wants Paris.</think>I will check.\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"location": "Paris", "unit": "celsius"}}\n'
        '</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>',
        [("get_weather", PARIS), ("get_time", {})],
        "I will check.\n",
        "The user wants Paris.",
    ),
    "llama3_json": Case(
        _flags("llama3_json", "llama3.1_json"),
        '<|python_tag|>{"name": "get_weather", "parameters": {"location": "Paris", '
        '"unit": "celsius"}}; {"name": "get_time", "parameters": {}}',
        [("get_weather", PARIS), ("get_time", {})],
        None,
    ),
    "mistral+mistral": Case(
        _flags("mistral", "mistral", "mistral"),
        '[THINK]Paris, in celsius.[/THINK][TOOL_CALLS][{"name": "get_weather", "arguments": '
        '{"location": "Paris", "unit": "celsius"}}]',
        [("get_weather", PARIS)],
        None,
        "Paris, in celsius.",
        id_shape="mistral",
    ),
    "pythonic": Case(
        _flags("pythonic", "llama3.2_pythonic"),
        "[get_weather(location='Paris', unit='celsius'), get_time()]",
        [("get_weather", PARIS), ("get_time", {})],
        None,
    ),
    "qwen3_coder": Case(
        _flags("qwen3_coder", "qwen3_coder"),
        "Let me look.\n<tool_call>\n<function=get_weather>\n<parameter=location>\nParis\n"
        "</parameter>\n<parameter=unit>\ncelsius\n</parameter>\n</function>\n</tool_call>",
        [("get_weather", PARIS)],
        "Let me look.\n",
    ),
    "deepseek_v3+deepseek_r1": Case(
        _flags("deepseek_v3", "deepseek_v3", "deepseek_r1"),
        # R1's template opens the think block in the prompt: the output lacks <think>.
        f"Paris needs a lookup.</think>Checking.{DS['calls']}{DS['call']}function{DS['sep']}"
        'get_weather\n```json\n{"location": "Paris", "unit": "celsius"}\n```'
        f"{DS['end']}{DS['calls_end']}",
        [("get_weather", PARIS)],
        "Checking.",
        "Paris needs a lookup.",
    ),
    "granite+granite": Case(
        _flags("granite", "granite", "granite"),
        "Here is my thought process: look up Paris. Here is my response: "
        '<|tool_call|>[{"name": "get_weather", "arguments": {"location": "Paris", '
        '"unit": "celsius"}}]',
        [("get_weather", PARIS)],
        None,
        " look up Paris. ",
    ),
    "internlm": Case(
        _flags("internlm", "internlm2_tool"),
        'Let me check.<|action_start|><|plugin|>\n{"name": "get_weather", "parameters": '
        '{"location": "Paris", "unit": "celsius"}}<|action_end|>',
        [("get_weather", PARIS)],
        "Let me check.",
    ),
}


# --- the scripted model and its servers ---


class Scripted:
    """The scripted checkpoint, its tokenizer, and one server per distinct flag set (started
    on first use, stopped at the end of the module)."""

    def __init__(self, path: Path, logs: Path) -> None:
        self.path = path
        self.logs = logs
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.servers: dict[tuple[str, ...], Server] = {}

    def say(self, text: str) -> None:
        """Make the model's next outputs ``text`` (then EOS)."""
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        assert self.tokenizer.decode(ids) == text, "the text must survive tokenization"
        (self.path / "script.json").write_text(json.dumps([*ids, self.tokenizer.eos_token_id]))

    def server(self, *flags: str) -> Server:
        if flags not in self.servers:
            # No prefix caching: a cached block of generated tokens reused as a later prompt's
            # prefix would count as generated (see scripted_model/plugin.py).
            args = [str(self.path), "--served-model-name", "scripted", "--max-model-len", "1024"]
            args.append("--no-enable-prefix-caching")
            log = self.logs / f"server-{len(self.servers)}.log"
            self.servers[flags] = start_server([*args, *flags], log, program=SERVE)
        return self.servers[flags]


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Iterator[Scripted]:
    path = tmp_path_factory.mktemp("scripted")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.add_tokens(SPECIAL_TOKENS, special_tokens=True)
    tokenizer.add_tokens(PLAIN_TOKENS)
    write_scripted_checkpoint(path, tokenizer, [tokenizer.eos_token_id], 1024)
    owner = Scripted(path, tmp_path_factory.mktemp("scripted-logs"))
    try:
        yield owner
    finally:
        for server in owner.servers.values():
            stop_server(server)


def chat(server: Server, **kwargs: Any) -> Any:
    kwargs.setdefault("messages", QUESTION)
    return server.client().chat.completions.create(model="scripted", **kwargs)


@dataclass
class Streamed:
    """A streamed message rebuilt from its chunks."""

    reasoning: str = ""
    content: str = ""
    calls: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str | None = None
    order: list[str] = field(default_factory=list)


def stream(server: Server, **kwargs: Any) -> Streamed:
    """Rebuild a streamed message, checking OpenAI's delta format on the way: a call's first
    delta carries index, id, type and name (indices increase), later ones only fragments."""
    out = Streamed()
    for chunk in chat(server, stream=True, **kwargs):
        choice = chunk.choices[0]
        delta = choice.delta
        if choice.finish_reason:
            out.finish_reason = choice.finish_reason
        reasoning = getattr(delta, "reasoning_content", None)
        assert reasoning == getattr(delta, "reasoning", None)
        if reasoning:
            out.reasoning += reasoning
            out.order.append("reasoning")
        if delta.content:
            out.content += delta.content
            out.order.append("content")
        for call in delta.tool_calls or []:
            fn = call.function
            if call.index == len(out.calls):
                assert call.id and call.type == "function" and fn and fn.name, call
                out.calls.append({"id": call.id, "name": fn.name, "arguments": fn.arguments or ""})
            else:
                assert call.index == len(out.calls) - 1, "calls arrive in index order"
                assert call.id is None and (fn is None or fn.name is None), call
                out.calls[call.index]["arguments"] += (fn.arguments or "") if fn else ""
            out.order.append("tool_calls")
    return out


def check_id(call_id: str, shape: str) -> None:
    if shape == "mistral":
        assert len(call_id) == 9 and call_id.isalnum(), call_id
    else:
        assert call_id.startswith("call_"), call_id


# --- tool_choice "auto" and reasoning, every built-in parser ---


@pytest.mark.parametrize("name", list(CASES))
def test_builtin_parsers_end_to_end(scripted: Scripted, name: str) -> None:
    case = CASES[name]
    server = scripted.server(*case.flags)
    scripted.say(case.output)
    out = chat(server, tools=TOOLS)
    choice = out.choices[0]
    message = choice.message
    assert choice.finish_reason == "tool_calls"
    assert message.content == case.content
    assert getattr(message, "reasoning_content", None) == case.reasoning
    assert getattr(message, "reasoning", None) == case.reasoning
    calls = [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls]
    assert calls == case.calls
    for call in message.tool_calls:
        assert call.type == "function"
        check_id(call.id, case.id_shape)

    streamed = stream(server, tools=TOOLS)
    assert streamed.finish_reason == "tool_calls"
    assert streamed.reasoning == (case.reasoning or "")
    assert streamed.content == (case.content or "")
    assert [c["name"] for c in streamed.calls] == [c.function.name for c in message.tool_calls]
    assert [c["arguments"] for c in streamed.calls] == [
        c.function.arguments for c in message.tool_calls
    ]
    for call in streamed.calls:
        check_id(call["id"], case.id_shape)
    if case.reasoning:
        first_other = min(
            (i for i, kind in enumerate(streamed.order) if kind != "reasoning"), default=0
        )
        assert "reasoning" not in streamed.order[first_other:], "reasoning comes first"


def test_tool_choice_none_and_plain_answers_are_content(scripted: Scripted) -> None:
    """With tool_choice "none" a call-shaped output stays content; an answer without a call
    is plain content with finish_reason "stop", streaming alike."""
    case = CASES["hermes+qwen3"]
    server = scripted.server(*case.flags)
    output = case.output.split("</think>", 1)[1]
    scripted.say(output)
    out = chat(server, tools=TOOLS, tool_choice="none")
    assert out.choices[0].finish_reason == "stop"
    assert not out.choices[0].message.tool_calls
    assert out.choices[0].message.content == output
    scripted.say("It is sunny in Paris.")
    for kwargs in ({}, {"tools": TOOLS}):
        out = chat(server, **kwargs)
        assert out.choices[0].message.content == "It is sunny in Paris."
        assert out.choices[0].finish_reason == "stop"
        assert not out.choices[0].message.tool_calls
        streamed = stream(server, **kwargs)
        assert (streamed.content, streamed.calls) == ("It is sunny in Paris.", [])


def test_parallel_tool_calls_false_keeps_the_first_call(scripted: Scripted) -> None:
    case = CASES["llama3_json"]
    server = scripted.server(*case.flags)
    scripted.say(case.output)
    out = chat(server, tools=TOOLS, parallel_tool_calls=False)
    assert [c.function.name for c in out.choices[0].message.tool_calls] == ["get_weather"]
    streamed = stream(server, tools=TOOLS, parallel_tool_calls=False)
    assert [c["name"] for c in streamed.calls] == ["get_weather"]


@pytest.mark.parametrize(
    "output",
    [
        '<tool_call>\n{"name": "get_weather", "arguments": {"location": Paris}}\n</tool_call>',
        '<tool_call>\n{"name": "no_such_tool", "arguments": {}}\n</tool_call>',
        '<tool_call>\n{"name": "get_weather", "arguments": {"loca',
    ],
    ids=["broken-json", "unknown-function", "truncated"],
)
def test_malformed_calls_become_content_not_errors(scripted: Scripted, output: str) -> None:
    server = scripted.server(*CASES["hermes+qwen3"].flags)
    scripted.say(output)
    out = chat(server, tools=TOOLS)
    assert out.choices[0].message.content == output
    assert not out.choices[0].message.tool_calls
    assert out.choices[0].finish_reason == "stop"
    stream(server, tools=TOOLS)  # completes without an error


def test_enable_thinking_false_reaches_the_template(scripted: Scripted) -> None:
    """chat_template_kwargs are template variables; qwen3 reads a think-less output as
    content."""
    server = scripted.server(*CASES["hermes+qwen3"].flags)
    template = (
        "{% for m in messages %}{{ m.content }}{% endfor %}"
        "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>{% endif %}"
    )
    url = f"{server.url}/tokenize"
    for kwargs, suffix in (({}, "today?"), ({"enable_thinking": False}, "</think>")):
        body = {"messages": QUESTION, "chat_template": template, "chat_template_kwargs": kwargs}
        tokens = requests.post(url, json=body, timeout=30).json()["tokens"]
        assert scripted.tokenizer.decode(tokens).endswith(suffix)
    scripted.say("Sunny.")
    out = chat(
        server,
        extra_body={"chat_template": template, "chat_template_kwargs": {"enable_thinking": False}},
    )
    assert (out.choices[0].message.content, out.choices[0].message.reasoning_content) == (
        "Sunny.",
        None,
    )


def test_a_tool_conversation_renders_through_the_template(scripted: Scripted) -> None:
    """An assistant turn with tool_calls (arguments as a JSON text) and a tool result render
    through the template: the arguments appear as JSON, not as a quoted string."""
    server = scripted.server(*CASES["hermes+qwen3"].flags)
    arguments = json.dumps(PARIS)
    messages = [
        *QUESTION,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees and sunny"},
    ]
    body = {"messages": messages, "tools": TOOLS}
    tokens = requests.post(f"{server.url}/tokenize", json=body, timeout=30).json()["tokens"]
    prompt = scripted.tokenizer.decode(tokens)
    assert '{"name": "get_weather", "arguments": {"location": "Paris", "unit": "celsius"}}' in (
        prompt
    )
    assert "<tool_response>\n18 degrees and sunny\n</tool_response>" in prompt
    assert '"get_time"' in prompt  # the tools are in the system prompt
    scripted.say("It is 18 degrees and sunny in Paris.")
    out = chat(server, messages=messages, tools=TOOLS)
    assert out.choices[0].message.content == "It is 18 degrees and sunny in Paris.", (
        out.usage,
        server.log()[-3000:],
    )


# --- request errors ---


def test_auto_without_enable_auto_tool_choice_is_a_400(scripted: Scripted) -> None:
    server = scripted.server()
    body = {"messages": QUESTION, "tools": TOOLS, "tool_choice": "auto"}
    resp = requests.post(f"{server.url}/v1/chat/completions", json=body, timeout=30)
    assert_openai_error(resp, 400, "--enable-auto-tool-choice")
    scripted.say("No tools here.")
    out = chat(server, tools=TOOLS)  # unset tool_choice: the tools are only shown
    assert out.choices[0].message.content == "No tools here."


@pytest.mark.parametrize(
    "body,fragment",
    [
        ({"tool_choice": "required"}, "needs tools"),
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "nope",
        ),
        ({"tools": [{"type": "function", "function": {"name": ""}}]}, "name"),
        ({"tools": [WEATHER, WEATHER]}, "distinct"),
        ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
    ],
    ids=["required-without-tools", "unknown-named", "empty-name", "duplicate", "bad-choice"],
)
def test_bad_tool_requests_are_400s(scripted: Scripted, body: dict, fragment: str) -> None:
    server = scripted.server(*CASES["hermes+qwen3"].flags)
    resp = requests.post(
        f"{server.url}/v1/chat/completions", json={"messages": QUESTION, **body}, timeout=30
    )
    assert_openai_error(resp, 400, fragment)


GUIDED = "guided_decoding" in getattr(SamplingParams, "__dataclass_fields__", {})


@pytest.mark.skipif(GUIDED, reason="the engine has guided decoding")
@pytest.mark.parametrize(
    "choice", ["required", {"type": "function", "function": {"name": "get_weather"}}]
)
def test_required_and_named_need_guided_decoding(scripted: Scripted, choice: Any) -> None:
    server = scripted.server(*CASES["hermes+qwen3"].flags)
    body = {"messages": QUESTION, "tools": TOOLS, "tool_choice": choice}
    resp = requests.post(f"{server.url}/v1/chat/completions", json=body, timeout=30)
    assert_openai_error(resp, 400, "needs guided decoding")


# --- start-up flags ---


@pytest.mark.parametrize(
    "opts,fragment",
    [
        ({"tool_call_parser": "nope"}, "known: deepseek_v3"),
        ({"reasoning_parser": "nope"}, "known: deepseek_r1"),
        ({"enable_auto_tool_choice": True}, "--tool-call-parser"),
        ({"enable_reasoning": True}, "--reasoning-parser"),
    ],
)
def test_bad_parser_flags_are_rejected(opts: dict[str, Any], fragment: str) -> None:
    from pagoda.server.launch import resolve_parsers

    with pytest.raises(ValueError, match=fragment):
        resolve_parsers(opts)


def test_an_unknown_parser_name_fails_at_start_up(scripted: Scripted) -> None:
    import subprocess

    proc = subprocess.run(
        [*SERVE, "serve", str(scripted.path), "--tool-call-parser", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "unknown tool parser 'nope'; known: deepseek_v3" in proc.stderr, proc.stderr


def test_public_lookups_resolve_parsers_and_list_known_names() -> None:
    from pagoda.interfaces import ReasoningParser, ToolParser

    assert issubclass(pagoda.get_tool_parser("hermes"), ToolParser)
    assert issubclass(pagoda.get_reasoning_parser("deepseek_r1"), ReasoningParser)
    with pytest.raises(RegistryError, match="known: .*llama3_json"):
        pagoda.get_tool_parser("nope")
    with pytest.raises(RegistryError, match="known: .*qwen3"):
        pagoda.get_reasoning_parser("nope")


def test_the_shipped_templates_are_package_data() -> None:
    installed = Path(pagoda.__file__).parent / "examples"
    names = sorted(p.name for p in installed.glob("tool_chat_template_*.jinja"))
    assert len(names) == 8
    assert sorted(p.name for p in EXAMPLES.glob("*.jinja")) == names


# --- the documented custom parser (docs/plugins.md) ---


def test_the_documented_custom_parser_works_with_tool_parser_plugin(scripted: Scripted) -> None:
    assert DOCS_PARSER.read_text() in (REPO / "docs" / "plugins.md").read_text()
    server = scripted.server(
        "--enable-auto-tool-choice",
        "--tool-parser-plugin",
        str(DOCS_PARSER),
        "--tool-call-parser",
        "my_calls",
    )
    scripted.say('Checking. CALL get_weather {"location": "Paris", "unit": "celsius"}')
    out = chat(server, tools=TOOLS)
    message = out.choices[0].message
    assert out.choices[0].finish_reason == "tool_calls"
    assert message.content == "Checking. "
    [call] = message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", PARIS)
    streamed = stream(server, tools=TOOLS)
    assert streamed.content == "Checking. "
    assert [(c["name"], c["arguments"]) for c in streamed.calls] == [
        ("get_weather", call.function.arguments)
    ]


def test_openai_errors_are_typed(scripted: Scripted) -> None:
    server = scripted.server()
    with pytest.raises(openai.BadRequestError):
        chat(server, tools=TOOLS, tool_choice="auto")


def test_chat_template_flag_finds_the_installed_examples_from_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pagoda.server.launch import _chat_template

    monkeypatch.chdir(tmp_path)
    text = _chat_template("examples/tool_chat_template_llama3.1_json.jinja")
    assert text == (EXAMPLES / "tool_chat_template_llama3.1_json.jinja").read_text()


# --- tool_choice "required" and named: guided decoding on the default model ---


@pytest.fixture(scope="module")
def default_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("default-tools") / "server.log"
    with running_server(["--max-model-len", "2048"], log) as srv:
        yield srv


@pytest.mark.skipif(not GUIDED, reason="SamplingParams has no guided_decoding yet")
@pytest.mark.parametrize("stream_it", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize(
    "choice",
    ["required", {"type": "function", "function": {"name": "get_weather"}}],
    ids=["required", "named"],
)
def test_required_and_named_calls_validate_against_the_schema(
    default_server: Server, choice: Any, stream_it: bool
) -> None:
    """The seed's get_weather example: whatever the model, guided decoding makes the call
    valid against the tool's parameters schema."""
    import jsonschema

    kwargs = {
        "model": default_server.client().models.list().data[0].id,
        "messages": QUESTION,
        "tools": [WEATHER],
        "tool_choice": choice,
        "max_tokens": 200,
        "temperature": 0,
    }
    client = default_server.client()
    if stream_it:
        calls: list[dict[str, str]] = []
        finish = None
        for chunk in client.chat.completions.create(stream=True, **kwargs):
            for call in chunk.choices[0].delta.tool_calls or []:
                if call.index == len(calls):
                    calls.append({"name": call.function.name, "arguments": ""})
                calls[call.index]["arguments"] += call.function.arguments or ""
            finish = chunk.choices[0].finish_reason or finish
        found = [(c["name"], c["arguments"]) for c in calls]
    else:
        out = client.chat.completions.create(**kwargs)
        finish = out.choices[0].finish_reason
        found = [(c.function.name, c.function.arguments) for c in out.choices[0].message.tool_calls]
    assert finish == "tool_calls"
    assert found and all(name == "get_weather" for name, _ in found)
    for _, arguments in found:
        jsonschema.validate(json.loads(arguments), WEATHER["function"]["parameters"])
