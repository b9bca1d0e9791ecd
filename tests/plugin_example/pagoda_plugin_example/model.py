"""ExampleForCausalLM: a Llama-style decoder built only from pagoda's public building blocks.

Each projection is its own linear layer, named as in a Hugging Face Llama checkpoint, so
loading weights is a name-for-name copy (pagoda's built-in Llama fuses q/k/v and gate/up).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from pagoda.interfaces import ModelContext
from pagoda.layers.attention import Attention
from pagoda.layers.embedding import LMHead, VocabEmbedding
from pagoda.layers.linear import ReplicatedLinear
from pagoda.layers.norm import RMSNorm
from pagoda.layers.rotary import RotaryEmbedding, rope_parameters


def _linear(ctx: ModelContext, prefix: str, n_in: int, n_out: int) -> ReplicatedLinear:
    return ReplicatedLinear(n_in, n_out, False, ctx.dtype, ctx.linear_method(prefix))


class ExampleAttention(nn.Module):
    def __init__(self, ctx: ModelContext, prefix: str) -> None:
        super().__init__()
        c = ctx.hf_config
        self.num_heads = c.num_attention_heads
        self.num_kv_heads = getattr(c, "num_key_value_heads", None) or self.num_heads
        self.head_dim = getattr(c, "head_dim", None) or c.hidden_size // self.num_heads
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.q_proj = _linear(ctx, f"{prefix}.q_proj", c.hidden_size, q_size)
        self.k_proj = _linear(ctx, f"{prefix}.k_proj", c.hidden_size, kv_size)
        self.v_proj = _linear(ctx, f"{prefix}.v_proj", c.hidden_size, kv_size)
        self.o_proj = _linear(ctx, f"{prefix}.o_proj", q_size, c.hidden_size)
        self.rotary_emb = RotaryEmbedding(
            self.head_dim, c.max_position_embeddings, rope_parameters(c)
        )
        # Reads and writes the paged KV cache through the forward context the engine sets.
        self.attn = Attention(self.num_heads, self.head_dim, self.head_dim**-0.5, self.num_kv_heads)

    def forward(self, positions: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        q = self.q_proj(x).reshape(n, self.num_heads, self.head_dim)
        k = self.k_proj(x).reshape(n, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x)
        q, k = self.rotary_emb(positions, q, k)
        return self.o_proj(self.attn(q, k, v))


class ExampleMLP(nn.Module):
    def __init__(self, ctx: ModelContext, prefix: str) -> None:
        super().__init__()
        c = ctx.hf_config
        self.gate_proj = _linear(ctx, f"{prefix}.gate_proj", c.hidden_size, c.intermediate_size)
        self.up_proj = _linear(ctx, f"{prefix}.up_proj", c.hidden_size, c.intermediate_size)
        self.down_proj = _linear(ctx, f"{prefix}.down_proj", c.intermediate_size, c.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class ExampleDecoderLayer(nn.Module):
    def __init__(self, ctx: ModelContext, prefix: str) -> None:
        super().__init__()
        c = ctx.hf_config
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.self_attn = ExampleAttention(ctx, f"{prefix}.self_attn")
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.mlp = ExampleMLP(ctx, f"{prefix}.mlp")

    def forward(self, positions: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(positions, self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class ExampleModel(nn.Module):
    def __init__(self, ctx: ModelContext) -> None:
        super().__init__()
        c = ctx.hf_config
        self.embed_tokens = VocabEmbedding(c.vocab_size, c.hidden_size, ctx.dtype)
        self.layers = nn.ModuleList(
            ExampleDecoderLayer(ctx, f"model.layers.{i}") for i in range(c.num_hidden_layers)
        )
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(input_ids)
        for layer in self.layers:
            x = layer(positions, x)
        return self.norm(x)


class ExampleForCausalLM(nn.Module):
    """Satisfies :class:`pagoda.interfaces.CausalLM`: ``forward`` takes a flat batch of
    tokens of many requests; ``compute_logits`` the rows that need sampling."""

    def __init__(self, ctx: ModelContext) -> None:
        super().__init__()
        c = ctx.hf_config
        self.model = ExampleModel(ctx)
        self.lm_head = LMHead(c.vocab_size, c.hidden_size, ctx.dtype)
        self.tie_word_embeddings = bool(getattr(c, "tie_word_embeddings", False))
        if self.tie_word_embeddings:
            self.lm_head.tie(self.model.embed_tokens)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, positions)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden_states)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        params = dict(self.named_parameters())
        loaded: set[str] = set()
        for name, tensor in weights:
            if "rotary_emb.inv_freq" in name or (
                name == "lm_head.weight" and self.tie_word_embeddings
            ):
                continue
            if name not in params:
                raise ValueError(f"checkpoint tensor {name!r} matches no parameter")
            param = params[name]
            getattr(param, "weight_loader", _copy)(param, tensor)
            loaded.add(name)
        return loaded


def _copy(param: nn.Parameter, tensor: torch.Tensor) -> None:
    if param.shape != tensor.shape:
        raise ValueError(f"shape mismatch: {tuple(param.shape)} vs {tuple(tensor.shape)}")
    param.data.copy_(tensor)
