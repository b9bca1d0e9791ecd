"""The Llama family: Llama (SmolLM2), Mistral, Qwen2 (QKV bias) and Qwen3 (per-head q/k norm)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from pagoda.interfaces import ModelContext
from pagoda.layers.activation import SiluAndMul
from pagoda.layers.attention import Attention
from pagoda.layers.embedding import LMHead, VocabEmbedding
from pagoda.layers.linear import (
    MergedColumnParallelLinear,
    QKVParallelLinear,
    RowParallelLinear,
)
from pagoda.layers.norm import RMSNorm
from pagoda.layers.rotary import get_rope, rope_parameters
from pagoda.layers.weight_loading import load_mapped_weights


class LlamaAttention(nn.Module):
    def __init__(self, ctx: ModelContext, prefix: str, qkv_bias: bool, qk_norm: bool) -> None:
        super().__init__()
        c = ctx.hf_config
        self.num_heads = c.num_attention_heads
        self.num_kv_heads = getattr(c, "num_key_value_heads", None) or self.num_heads
        self.head_dim = getattr(c, "head_dim", None) or c.hidden_size // self.num_heads
        self.qkv_proj = QKVParallelLinear(
            c.hidden_size,
            self.head_dim,
            self.num_heads,
            self.num_kv_heads,
            qkv_bias,
            ctx.dtype,
            ctx.linear_method(f"{prefix}.qkv_proj"),
        )
        self.o_proj = RowParallelLinear(
            self.num_heads * self.head_dim,
            c.hidden_size,
            getattr(c, "o_proj_bias", False),
            ctx.dtype,
            ctx.linear_method(f"{prefix}.o_proj"),
        )
        self.q_norm = RMSNorm(self.head_dim, c.rms_norm_eps) if qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, c.rms_norm_eps) if qk_norm else None
        self.rotary_emb = get_rope(self.head_dim, c.max_position_embeddings, rope_parameters(c))
        self.attn = Attention(self.num_heads, self.head_dim, self.head_dim**-0.5, self.num_kv_heads)
        self.q_size = self.num_heads * self.head_dim
        self.kv_size = self.num_kv_heads * self.head_dim

    def forward(self, positions: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        qkv = self.qkv_proj(x)
        heads, kv_heads, d = self.num_heads, self.num_kv_heads, self.head_dim
        if self.q_norm is None or self.k_norm is None:
            # q and k sit side by side in the fused output: rotate them in one pass.
            qk = self.rotary_emb.rotate(
                positions, qkv[:, : self.q_size + self.kv_size].view(n, heads + kv_heads, d)
            )
            q, k = qk[:, :heads], qk[:, heads:]
        else:
            q = self.q_norm(qkv[:, : self.q_size].reshape(n, heads, d))
            k = self.k_norm(
                qkv[:, self.q_size : self.q_size + self.kv_size].reshape(n, kv_heads, d)
            )
            q, k = self.rotary_emb(positions, q, k)
        v = qkv[:, self.q_size + self.kv_size :]
        return self.o_proj(self.attn(q, k, v))


class LlamaMLP(nn.Module):
    def __init__(self, ctx: ModelContext, prefix: str) -> None:
        super().__init__()
        c = ctx.hf_config
        bias = getattr(c, "mlp_bias", False)
        self.gate_up_proj = MergedColumnParallelLinear(
            c.hidden_size,
            [c.intermediate_size] * 2,
            bias,
            ctx.dtype,
            ctx.linear_method(f"{prefix}.gate_up_proj"),
        )
        self.down_proj = RowParallelLinear(
            c.intermediate_size,
            c.hidden_size,
            bias,
            ctx.dtype,
            ctx.linear_method(f"{prefix}.down_proj"),
        )
        self.act = SiluAndMul()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act.of_projection(self.gate_up_proj, x))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, ctx: ModelContext, prefix: str, qkv_bias: bool, qk_norm: bool) -> None:
        super().__init__()
        c = ctx.hf_config
        self.self_attn = LlamaAttention(ctx, f"{prefix}.self_attn", qkv_bias, qk_norm)
        self.mlp = LlamaMLP(ctx, f"{prefix}.mlp")
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)

    def forward(
        self, positions: torch.Tensor, x: torch.Tensor, residual: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if residual is None:
            residual = x
            x = self.input_layernorm(x)
        else:
            x, residual = self.input_layernorm(x, residual)
        x = self.self_attn(positions, x)
        x, residual = self.post_attention_layernorm(x, residual)
        return self.mlp(x), residual


class LlamaModel(nn.Module):
    def __init__(self, ctx: ModelContext, qkv_bias: bool, qk_norm: bool) -> None:
        super().__init__()
        c = ctx.hf_config
        self.embed_tokens = VocabEmbedding(c.vocab_size, c.hidden_size, ctx.dtype)
        self.layers = nn.ModuleList(
            LlamaDecoderLayer(ctx, f"model.layers.{i}", qkv_bias, qk_norm)
            for i in range(c.num_hidden_layers)
        )
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(input_ids)
        residual = None
        for layer in self.layers:
            x, residual = layer(positions, x, residual)
        x, _ = self.norm(x, residual)
        return x


# checkpoint name part -> (fused parameter name part, shard id)
_STACKED = {
    "q_proj": ("qkv_proj", "q"),
    "k_proj": ("qkv_proj", "k"),
    "v_proj": ("qkv_proj", "v"),
    "gate_proj": ("gate_up_proj", 0),
    "up_proj": ("gate_up_proj", 1),
}


class LlamaForCausalLM(nn.Module):
    """Llama-architecture decoder (GQA, tied or separate LM head, scaled rope)."""

    qkv_bias_default = False
    qk_norm = False

    def __init__(self, ctx: ModelContext) -> None:
        super().__init__()
        c = ctx.hf_config
        self.config = c
        qkv_bias = bool(getattr(c, "attention_bias", self.qkv_bias_default))
        self.model = LlamaModel(ctx, qkv_bias, self.qk_norm)
        self.lm_head = LMHead(c.vocab_size, c.hidden_size, ctx.dtype, ctx.linear_method("lm_head"))
        self.tie_word_embeddings = bool(getattr(c, "tie_word_embeddings", False))
        if self.tie_word_embeddings:
            self.lm_head.tie(self.model.embed_tokens)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, positions)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden_states)

    def _map_name(self, name: str) -> tuple[str | None, Any]:
        if "rotary_emb.inv_freq" in name or (name == "lm_head.weight" and self.tie_word_embeddings):
            return None, None
        parts = name.split(".")
        for i, part in enumerate(parts):
            if part in _STACKED:
                fused, shard = _STACKED[part]
                parts[i] = fused
                return ".".join(parts), shard
        return name, None

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        return load_mapped_weights(self, weights, self._map_name)


class MistralForCausalLM(LlamaForCausalLM):
    """Mistral: the Llama architecture (sliding-window attention is not applied)."""


class Qwen2ForCausalLM(LlamaForCausalLM):
    """Qwen2: Llama with biases on the Q, K and V projections."""

    qkv_bias_default = True


class Qwen3ForCausalLM(LlamaForCausalLM):
    """Qwen3: Llama with RMSNorm over each head of q and k before rotary embedding."""

    qk_norm = True
