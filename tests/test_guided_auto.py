"""``--guided-decoding-backend auto``: backends are tried by their registered priority, and a
backend that cannot express a constraint hands it to the next one (logged)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from pagoda.core.guided import GuidedDecoding
from pagoda.hookspecs import hookimpl
from pagoda.interfaces.guided import GuidedDecodingParams, UnsupportedConstraintError
from pagoda.plugin_manager import PluginManager

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(tokenizer_dir)


def _guided(pm: PluginManager, tokenizer: Any) -> GuidedDecoding:
    eos = frozenset({tokenizer.eos_token_id})
    return GuidedDecoding(pm, tokenizer, len(tokenizer), eos, "auto")


def test_auto_falls_back_when_xgrammar_cannot_express_the_constraint(
    tokenizer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # xgrammar refuses a whitespace_pattern; outlines (next by priority) takes it.
    params = GuidedDecodingParams(json=SCHEMA, whitespace_pattern=r"[ ]?")
    with caplog.at_level(logging.INFO, logger="pagoda"):
        compiled = _guided(PluginManager(), tokenizer).compile(params)
    assert "outlines" in type(compiled).__module__
    assert "xgrammar cannot express" in caplog.text and "falling back to outlines" in caplog.text


class _Refuses:
    name = "refuses"

    def __init__(self, *args: Any) -> None:
        pass

    def compile(self, params: GuidedDecodingParams) -> Any:
        raise UnsupportedConstraintError("refuses everything")


class _RefusingPlugin:
    @hookimpl
    def register_guided_backends(self, register: Any) -> None:
        register("refuses", _Refuses, priority=100)


def test_auto_tries_the_highest_priority_backend_first(
    tokenizer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    pm = PluginManager()
    pm.register(_RefusingPlugin(), "refusing")
    with caplog.at_level(logging.INFO, logger="pagoda"):
        compiled = _guided(pm, tokenizer).compile(GuidedDecodingParams(json=SCHEMA))
    assert "refuses cannot express" in caplog.text  # tried first, by priority
    assert "xgrammar" in type(compiled).__module__  # then the next one, which succeeds
