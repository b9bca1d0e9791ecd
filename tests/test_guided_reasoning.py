"""With a reasoning parser, guided decoding constrains only what follows the reasoning.

A scripted model (tests/scripted_model) writes ``<think>...</think>yes`` whatever the prompt;
a guided choice of "yes"/"no" must let the reasoning through untouched and then constrain the
answer. Without the reasoning parser the grammar applies from the first token, so the
scripted reasoning cannot appear.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from scripted_model import plugin as scripted_plugin
from scripted_model.checkpoint import write_scripted_checkpoint
from transformers import AutoTokenizer

from pagoda import LLM, SamplingParams
from pagoda.interfaces.guided import GuidedDecodingParams
from pagoda.plugin_manager import PluginManager, set_plugin_manager

SCRIPT = "<think>Let me see: it is.</think>yes"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Path:
    path = tmp_path_factory.mktemp("scripted-reasoning")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    ids = tokenizer.encode(SCRIPT, add_special_tokens=False) + [tokenizer.eos_token_id]
    write_scripted_checkpoint(path, tokenizer, ids, max_position_embeddings=512)
    return path


@pytest.fixture()
def plugins() -> Iterator[None]:
    pm = PluginManager()
    pm.register(scripted_plugin, "scripted")
    set_plugin_manager(pm)
    yield
    set_plugin_manager(None)


def _run(path: Path, reasoning_parser: str | None) -> str:
    llm = LLM(
        str(path),
        reasoning_parser=reasoning_parser,
        enable_prefix_caching=False,
        kv_cache_memory=4 << 20,
    )
    params = SamplingParams(
        temperature=0,
        max_tokens=40,
        guided_decoding=GuidedDecodingParams(choice=["yes", "no"], backend="xgrammar"),
    )
    return llm.generate(["Is it?"], params, use_tqdm=False)[0].outputs[0].text


def test_the_grammar_starts_after_the_reasoning_ends(checkpoint: Path, plugins: None) -> None:
    assert _run(checkpoint, "deepseek_r1") == SCRIPT


def test_without_a_reasoning_parser_the_grammar_applies_from_the_first_token(
    checkpoint: Path, plugins: None
) -> None:
    assert _run(checkpoint, None) in ("yes", "no")
