"""Write a checkpoint directory for the scripted model (see plugin.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_scripted_checkpoint(
    path: Path, tokenizer: Any, script: list[int], max_position_embeddings: int
) -> None:
    """Save ``tokenizer`` in ``path`` with a ScriptedForCausalLM config.json whose
    ``script_file`` (``path/script.json``) holds the token ids ``script``."""
    tokenizer.save_pretrained(path)
    config = {
        "architectures": ["ScriptedForCausalLM"],
        "model_type": "llama",
        "vocab_size": len(tokenizer),
        "hidden_size": 16,
        "num_attention_heads": 1,
        "num_key_value_heads": 1,
        "num_hidden_layers": 1,
        "intermediate_size": 16,
        "max_position_embeddings": max_position_embeddings,
        "script_file": str(path / "script.json"),
    }
    (path / "config.json").write_text(json.dumps(config))
    (path / "script.json").write_text(json.dumps(script))
