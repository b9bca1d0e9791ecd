"""Tiny random-weight checkpoints of the Llama family, built with transformers and saved as
safetensors, for parity tests against the transformers implementation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

COMMON: dict[str, Any] = dict(
    vocab_size=49152,  # the default model's tokenizer, so prompts can be real text
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    rms_norm_eps=1e-6,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)

ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")


def save_default_tokenizer(path: Path) -> Path:
    """Save the default model's tokenizer (from its GGUF file) as a plain HF tokenizer dir."""
    from pagoda.config import ModelConfig, resolve_model_path
    from pagoda.core.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(ModelConfig(model_path=resolve_model_path("smollm2")))
    tokenizer.save_pretrained(path)
    return path


def make_tiny_checkpoint(
    arch: str, path: Path, tokenizer_dir: Path | None = None, seed: int = 0, **overrides: Any
) -> Path:
    """Save a random ``arch`` model under ``path`` (with the tokenizer files of
    ``tokenizer_dir`` copied beside it); returns ``path``."""
    import shutil

    import transformers

    config_cls = {
        "LlamaForCausalLM": transformers.LlamaConfig,
        "MistralForCausalLM": transformers.MistralConfig,
        "Qwen2ForCausalLM": transformers.Qwen2Config,
        "Qwen3ForCausalLM": transformers.Qwen3Config,
    }[arch]
    kwargs = {**COMMON, **overrides}
    if arch == "Qwen3ForCausalLM":
        kwargs.setdefault("head_dim", 32)
    config = config_cls(**kwargs)
    config.architectures = [arch]
    torch.manual_seed(seed)
    model = getattr(transformers, arch)(config).to(torch.float32)
    # Random init gives near-zero weights and flat logits; widen them so greedy choices are
    # decisive and parity is meaningful.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.normal_(0, 0.15)
    model.save_pretrained(path, safe_serialization=True)
    if tokenizer_dir is not None:
        for f in Path(tokenizer_dir).iterdir():
            shutil.copy(f, Path(path) / f.name)
    return path
