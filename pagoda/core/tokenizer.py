"""Tokenizer loading (transformers' tokenizers and chat templates) and EOS discovery."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pagoda.config import ModelConfig, is_gguf, resolve_model_path


def load_tokenizer(config: ModelConfig) -> Any:
    """The HF tokenizer of ``--tokenizer`` or of the model (a directory or a GGUF file)."""
    from transformers import AutoTokenizer

    path = resolve_model_path(config.tokenizer) if config.tokenizer else config.model_path
    if is_gguf(path):
        p = Path(path)
        return AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
    return AutoTokenizer.from_pretrained(path)


def eos_token_ids(tokenizer: Any, config: ModelConfig) -> frozenset[int]:
    """EOS ids from the tokenizer and, when the checkpoint has one, generation_config.json."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen_config = Path(config.model_path) / "generation_config.json"
    if gen_config.is_file():
        eos = json.loads(gen_config.read_text()).get("eos_token_id")
        ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    return frozenset(ids)
