"""The built-in reasoning parsers, on hand-written outputs in each model family's format.

Every output is also streamed, one character and one token at a time, and the reasoning and
content deltas must concatenate to exactly the non-streaming reasoning and content, with all
reasoning arriving before any content that follows it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from pagoda.interfaces import DeltaMessage, ReasoningParser
from pagoda.plugin_manager import PluginManager

# name -> (parser, model output, expected reasoning, expected content)
CASES: dict[str, tuple[str, str, str | None, str | None]] = {
    "deepseek_r1_tags": (
        "deepseek_r1",
        "<think>\n9.11 < 9.9? Compare tenths.\n</think>\n\n9.9 is larger.",
        "\n9.11 < 9.9? Compare tenths.\n",
        "\n\n9.9 is larger.",
    ),
    "deepseek_r1_opening_tag_in_prompt": (
        "deepseek_r1",
        "Okay, 2+2.\n</think>\n\nIt is 4.",
        "Okay, 2+2.\n",
        "\n\nIt is 4.",
    ),
    "deepseek_r1_truncated": (
        "deepseek_r1",
        "<think>Still thinking about <b>",
        "Still thinking about <b>",
        None,
    ),
    "deepseek_r1_reasoning_only": ("deepseek_r1", "<think>x</think>", "x", None),
    "qwen3_thinking": (
        "qwen3",
        "<think>\nThe user greets me.\n</think>\n\nHello! ¿Qué tal?",
        "\nThe user greets me.\n",
        "\n\nHello! ¿Qué tal?",
    ),
    "qwen3_no_thinking": ("qwen3", "Hello! </think> is a tag.", None, "Hello! </think> is a tag."),
    "qwen3_late_tag_is_content": ("qwen3", "Hi <think>no</think>", None, "Hi <think>no</think>"),
    "granite": (
        "granite",
        "Here is my thought process:\nThe sky scatters blue light.\n"
        "Here is my response:\nRayleigh scattering.",
        "\nThe sky scatters blue light.\n",
        "\nRayleigh scattering.",
    ),
    "granite_contracted": (
        "granite",
        "Here's my thought process: hmm. Here's my response: ok",
        " hmm. ",
        " ok",
    ),
    "granite_plain": ("granite", "Here is the answer: 4.", None, "Here is the answer: 4."),
    "mistral": (
        "mistral",
        "[THINK]Add them: 5.[/THINK]The sum is 5.",
        "Add them: 5.",
        "The sum is 5.",
    ),
    "mistral_content_first": (
        "mistral",
        "Let me see. [THINK]hm[/THINK] Done [x].",
        "hm",
        "Let me see.  Done [x].",
    ),
    "mistral_plain": ("mistral", "No thinking [1] here.", None, "No thinking [1] here."),
}


@pytest.fixture(scope="module")
def parsers() -> dict[str, type[ReasoningParser]]:
    registry = PluginManager(allow=["reasoning_parsers"]).reasoning_parsers
    return {name: registry.get(name) for name in registry.names()}


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(tokenizer_dir)


def token_chunks(text: str, tokenizer: Any) -> list[str]:
    """One delta per token, holding text back while it ends in an incomplete character."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    chunks, emitted = [], ""
    for n in range(1, len(ids) + 1):
        decoded = tokenizer.decode(ids[:n])
        if not decoded.endswith("\ufffd"):
            chunks.append(decoded[len(emitted) :])
            emitted = decoded
    assert emitted == text
    return chunks


def stream(parser: ReasoningParser, chunks: list[str]) -> tuple[str | None, str | None, list]:
    text, reasoning, content, order = "", "", "", []
    for i, chunk in enumerate(chunks):
        delta = parser.extract_reasoning_content_streaming(
            text, text + chunk, chunk, list(range(i)), list(range(i + 1)), [i]
        )
        text += chunk
        if delta is None:
            continue
        assert isinstance(delta, DeltaMessage)
        assert delta.reasoning == delta.reasoning_content
        reasoning += delta.reasoning_content or ""
        content += delta.content or ""
        order += ["r"] * bool(delta.reasoning_content) + ["c"] * bool(delta.content)
    return reasoning or None, content or None, order


@pytest.mark.parametrize("case", sorted(CASES))
def test_splits_reasoning_from_content(case: str, parsers: dict) -> None:
    name, text, reasoning, content = CASES[case]
    assert parsers[name](None).extract_reasoning_content(text, None) == (reasoning, content)


@pytest.mark.parametrize("split", ["chars", "tokens"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_streaming_rebuilds_the_non_streaming_split(
    case: str, split: str, parsers: dict, tokenizer: Any
) -> None:
    name, text, reasoning, content = CASES[case]
    chunks = list(text) if split == "chars" else token_chunks(text, tokenizer)
    streamed_reasoning, streamed_content, order = stream(parsers[name](tokenizer), chunks)
    assert (streamed_reasoning, streamed_content) == (reasoning, content)
    if not case.startswith("mistral_content_first"):
        assert order == sorted(order, reverse=True), "reasoning deltas come before content"


@pytest.mark.parametrize("name", ["deepseek_r1", "qwen3", "granite", "mistral"])
def test_reasoning_end_and_content_ids_from_token_ids(
    name: str, parsers: dict, tokenizer: Any
) -> None:
    """The default model has no marker tokens, so the parsers find the end in decoded text."""
    _, text, _, content = next(c for c in CASES.values() if c[0] == name and c[2] and c[3])
    end = {
        "deepseek_r1": "</think>",
        "qwen3": "</think>",
        "granite": "Here is my response:",
        "mistral": "[/THINK]",
    }[name]
    parser = parsers[name](tokenizer)
    head = text[: text.index(end)]
    assert not parser.is_reasoning_end(tokenizer.encode(head, add_special_tokens=False))
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert parser.is_reasoning_end(ids)
    assert tokenizer.decode(parser.extract_content_ids(ids)).strip() == content.strip()
    assert parser.extract_content_ids(tokenizer.encode(head, add_special_tokens=False)) == []


class _MarkerVocab:
    """A tokenizer whose vocab holds the think markers as single tokens."""

    def get_vocab(self) -> dict[str, int]:
        return {"<think>": 5, "</think>": 6, "[THINK]": 7, "[/THINK]": 8}


@pytest.mark.parametrize("name, end_id", [("deepseek_r1", 6), ("qwen3", 6), ("mistral", 8)])
def test_marker_tokens_are_looked_up_in_the_vocab(name: str, end_id: int, parsers: dict):
    parser = parsers[name](_MarkerVocab())
    assert not parser.is_reasoning_end([1, 2, 3])
    assert parser.is_reasoning_end([1, end_id, 3])
    assert parser.extract_content_ids([1, end_id, 3, 4]) == [3, 4]
    assert parser.extract_content_ids([1, 2]) == []


def test_every_built_in_parser_is_registered_lazily() -> None:
    registry = PluginManager(allow=["reasoning_parsers"]).reasoning_parsers
    assert registry.names() == ["deepseek_r1", "granite", "mistral", "qwen3"]
    assert all(isinstance(e.value, str) for e in registry.entries())
    assert all(issubclass(registry.get(n), ReasoningParser) for n in registry.names())
