"""Weight sources: HF safetensors directories, single GGUF files, and dummy weights.

Every source yields (HF parameter name, tensor) pairs; the model's ``load_weights`` maps them
onto its (possibly fused) parameters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from pagoda.config import ModelConfig, is_gguf
from pagoda.interfaces.quant import GGUFBlocks

# GGUF tensor name (with the block number replaced by {}) -> HF name, for llama-family files.
_GGUF_TO_HF = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "blk.{}.attn_norm.weight": "model.layers.{}.input_layernorm.weight",
    "blk.{}.ffn_norm.weight": "model.layers.{}.post_attention_layernorm.weight",
    "blk.{}.attn_q.weight": "model.layers.{}.self_attn.q_proj.weight",
    "blk.{}.attn_k.weight": "model.layers.{}.self_attn.k_proj.weight",
    "blk.{}.attn_v.weight": "model.layers.{}.self_attn.v_proj.weight",
    "blk.{}.attn_q.bias": "model.layers.{}.self_attn.q_proj.bias",
    "blk.{}.attn_k.bias": "model.layers.{}.self_attn.k_proj.bias",
    "blk.{}.attn_v.bias": "model.layers.{}.self_attn.v_proj.bias",
    "blk.{}.attn_output.weight": "model.layers.{}.self_attn.o_proj.weight",
    "blk.{}.attn_q_norm.weight": "model.layers.{}.self_attn.q_norm.weight",
    "blk.{}.attn_k_norm.weight": "model.layers.{}.self_attn.k_norm.weight",
    "blk.{}.ffn_gate.weight": "model.layers.{}.mlp.gate_proj.weight",
    "blk.{}.ffn_up.weight": "model.layers.{}.mlp.up_proj.weight",
    "blk.{}.ffn_down.weight": "model.layers.{}.mlp.down_proj.weight",
}
_BLOCK = re.compile(r"^blk\.(\d+)\.")


def iter_safetensors(directory: str) -> Iterator[tuple[str, torch.Tensor]]:
    """All tensors of a HF checkpoint directory (one file or a sharded index)."""
    from safetensors import safe_open

    root = Path(directory)
    index = root / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = sorted(p.name for p in root.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors files in {directory}")
    for name in files:
        with safe_open(str(root / name), framework="pt") as f:
            for key in f.keys():
                yield key, f.get_tensor(key)


def _unpermute_rope(w: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Undo llama.cpp's reordering of q/k rows (interleaved rope -> rotate-half)."""
    rows = w.shape[0]
    return (
        w.reshape(num_heads, rows // num_heads // 2, 2, *w.shape[1:])
        .transpose(1, 2)
        .reshape(w.shape)
    )


def iter_gguf(path: str, hf_config: object) -> Iterator[tuple[str, torch.Tensor]]:
    """All tensors of a GGUF file, dequantized to float32, under HF names.

    A quantized tensor also carries its blocks as ``tensor.source_blocks`` (a
    :class:`GGUFBlocks`), which a quantization method may keep instead (see
    :func:`pagoda.layers.linear.keep_source_blocks`)."""
    import gguf

    reader = gguf.GGUFReader(path)
    arch = reader.fields["general.architecture"].contents()
    num_heads = hf_config.num_attention_heads  # type: ignore[attr-defined]
    num_kv_heads = getattr(hf_config, "num_key_value_heads", None) or num_heads
    for tensor in reader.tensors:
        match = _BLOCK.match(tensor.name)
        key = _BLOCK.sub("blk.{}.", tensor.name) if match else tensor.name
        if key not in _GGUF_TO_HF:
            raise ValueError(f"GGUF tensor {tensor.name!r} has no known HF name")
        hf_name = _GGUF_TO_HF[key].format(match.group(1)) if match else _GGUF_TO_HF[key]
        data = torch.tensor(
            gguf.quants.dequantize(tensor.data, tensor.tensor_type), dtype=torch.float32
        )
        block_size, _ = gguf.GGML_QUANT_SIZES[tensor.tensor_type]
        quantized = block_size > 1 and tensor.data.ndim == 2  # blocks, not plain numbers
        raw = torch.from_numpy(tensor.data.copy()) if quantized else None
        if arch == "llama" and key in ("blk.{}.attn_q.weight", "blk.{}.attn_k.weight"):
            heads = num_heads if "attn_q" in key else num_kv_heads
            data = _unpermute_rope(data, heads)
            raw = None if raw is None else _unpermute_rope(raw, heads).contiguous()
        if raw is not None:
            data.source_blocks = GGUFBlocks(tensor.tensor_type.name, raw)  # type: ignore[attr-defined]
        yield hf_name, data


def init_dummy_weights(model: nn.Module, seed: int) -> None:
    """Random weights at the right shapes (uniform in [-1e-3, 1e-3]; norms at 1).

    CPU parameters draw float32 values from a CPU generator (reproducible across machines);
    parameters on an accelerator draw in place from a generator on their device, which fills
    an 8B model in well under a second instead of minutes of host work and copies."""
    generators: dict[torch.device, torch.Generator] = {}
    for name, param in model.named_parameters():
        if name.endswith("norm.weight"):
            param.data.fill_(1.0)
            continue
        device = param.device
        if device not in generators:
            generators[device] = torch.Generator(device=device).manual_seed(seed)
        gen = generators[device]
        if device.type == "cpu":
            values = torch.empty(param.shape, dtype=torch.float32).uniform_(
                -1e-3, 1e-3, generator=gen
            )
            param.data.copy_(values)
        else:
            param.data.uniform_(-1e-3, 1e-3, generator=gen)


def load_weights(model: nn.Module, config: ModelConfig) -> None:
    """Fill ``model``'s parameters from the source ``config`` names, then let each layer's
    quantization method post-process its weights."""
    fmt = config.load_format
    if fmt == "dummy":
        init_dummy_weights(model, config.seed)
    else:
        if fmt == "auto":
            fmt = "gguf" if is_gguf(config.model_path) else "safetensors"
        source = (
            iter_gguf(config.model_path, config.hf_config)
            if fmt == "gguf"
            else iter_safetensors(config.model_path)
        )
        loaded = model.load_weights(source)  # type: ignore[operator]
        expected = {n for n, _ in model.named_parameters()}
        missing = expected - loaded
        if missing:
            raise ValueError(f"checkpoint lacks weights for: {', '.join(sorted(missing)[:8])}")
    for module in model.modules():
        method = getattr(module, "linear_method", None)
        if method is not None:
            method.process_weights_after_loading(module)
    for param in model.parameters():
        if hasattr(param, "source_blocks"):
            del param.source_blocks  # blocks no method kept
