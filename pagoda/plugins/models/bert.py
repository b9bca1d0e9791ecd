"""BERT: ``BertModel`` as an embedder and ``BertForSequenceClassification`` as a classifier or
cross-encoder. Bidirectional, so it runs outside the paged KV cache (``is_encoder``): the
model runner gives it whole prompts as one flat varlen batch with their token type ids."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pagoda.interfaces import ModelContext
from pagoda.layers.encoder_attention import VarlenLayout, encoder_attention, varlen_layout
from pagoda.layers.linear import QKVParallelLinear, ReplicatedLinear
from pagoda.layers.norm import add_layer_norm_
from pagoda.layers.weight_loading import load_mapped_weights


class BertEmbeddings(nn.Module):
    def __init__(self, c: Any, dtype: torch.dtype) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size, dtype=dtype)
        self.position_embeddings = nn.Embedding(
            c.max_position_embeddings, c.hidden_size, dtype=dtype
        )
        self.token_type_embeddings = nn.Embedding(
            getattr(c, "type_vocab_size", 2) or 1, c.hidden_size, dtype=dtype
        )
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps, dtype=dtype)

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        return add_layer_norm_(x, self.token_type_embeddings(token_type_ids), self.LayerNorm)


class BertSelfAttention(nn.Module):
    def __init__(self, c: Any, ctx: ModelContext, prefix: str) -> None:
        super().__init__()
        self.num_heads = c.num_attention_heads
        self.head_dim = c.hidden_size // self.num_heads
        self.qkv_proj = QKVParallelLinear(
            c.hidden_size,
            self.head_dim,
            self.num_heads,
            self.num_heads,
            True,
            ctx.dtype,
            ctx.linear_method(f"{prefix}.qkv_proj"),
        )
        self.scale = self.head_dim**-0.5

    def forward(self, x: torch.Tensor, layout: VarlenLayout) -> torch.Tensor:
        n = x.shape[0]
        qkv = self.qkv_proj(x).view(n, 3, self.num_heads, self.head_dim)
        return encoder_attention(qkv, layout, self.scale).reshape(n, -1)


class BertLayer(nn.Module):
    def __init__(self, c: Any, ctx: ModelContext, prefix: str) -> None:
        super().__init__()
        h, dtype = c.hidden_size, ctx.dtype
        if getattr(c, "hidden_act", "gelu") not in ("gelu", "gelu_new", "gelu_pytorch_tanh"):
            raise ValueError(f"BERT hidden_act {c.hidden_act!r} is not supported")
        self.approximate = "none" if c.hidden_act == "gelu" else "tanh"
        self.attention = BertSelfAttention(c, ctx, f"{prefix}.attention")
        self.attention_output = ReplicatedLinear(h, h, True, dtype)
        self.attention_norm = nn.LayerNorm(h, eps=c.layer_norm_eps, dtype=dtype)
        self.intermediate = ReplicatedLinear(h, c.intermediate_size, True, dtype)
        self.output = ReplicatedLinear(c.intermediate_size, h, True, dtype)
        self.output_norm = nn.LayerNorm(h, eps=c.layer_norm_eps, dtype=dtype)

    def forward(self, x: torch.Tensor, layout: VarlenLayout) -> torch.Tensor:
        x = add_layer_norm_(
            self.attention_output(self.attention(x, layout)), x, self.attention_norm
        )
        # In place: the projection's output is ours alone, and a fresh 6 MB tensor per layer
        # (a 2048-token step) page-faults whenever the allocator hands out new pages.
        y = torch.ops.aten.gelu_(self.intermediate(x), approximate=self.approximate)
        return add_layer_norm_(self.output(y), x, self.output_norm)


# checkpoint name fragment -> (our name fragment, shard of a fused projection or None)
_RENAMES = (
    (".attention.self.query.", ".attention.qkv_proj.", "q"),
    (".attention.self.key.", ".attention.qkv_proj.", "k"),
    (".attention.self.value.", ".attention.qkv_proj.", "v"),
    (".attention.output.dense.", ".attention_output.", None),
    (".attention.output.LayerNorm.", ".attention_norm.", None),
    (".intermediate.dense.", ".intermediate.", None),
    (".output.dense.", ".output.", None),
    (".output.LayerNorm.", ".output_norm.", None),
)


class BertModel(nn.Module):
    """BERT encoder; its output is the last hidden state of every token (pooled by the
    engine: CLS by default, or as the Sentence-Transformers config says)."""

    is_encoder = True
    default_pooling_type = "CLS"

    def __init__(self, ctx: ModelContext) -> None:
        super().__init__()
        c = ctx.hf_config
        self.config = c
        self.dtype = ctx.dtype
        self.embeddings = BertEmbeddings(c, ctx.dtype)
        self.encoder = nn.ModuleList(
            BertLayer(c, ctx, f"encoder.layer.{i}") for i in range(c.num_hidden_layers)
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        layout = varlen_layout(input_ids.device, self.dtype)
        pad = layout.num_rows - layout.num_tokens  # rows of no request (see encoder_attention)
        if pad:
            input_ids, positions, token_type_ids = (
                F.pad(t, (0, pad)) for t in (input_ids, positions, token_type_ids)
            )
        x = self.embeddings(input_ids, positions, token_type_ids)
        for layer in self.encoder:
            x = layer(x, layout)
        return x[: layout.num_tokens]

    # Checkpoint tensors a plain BertModel does not use.
    _skip_prefixes: tuple[str, ...] = ("pooler.", "cls.")

    def _map_name(self, name: str) -> tuple[str | None, Any]:
        if name.startswith("bert."):
            name = name[len("bert.") :]
        if name.endswith("position_ids") or name.startswith(self._skip_prefixes):
            return None, None
        if name.startswith("encoder.layer."):
            name = "encoder." + name[len("encoder.layer.") :]
            for old, new, shard in _RENAMES:
                if old in name:
                    return name.replace(old, new), shard
        return name, None

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        return load_mapped_weights(self, weights, self._map_name)


class BertForSequenceClassification(BertModel):
    """BERT with its pooler (dense + tanh on the CLS token) and a classifier: a classifier,
    or with one label a cross-encoder whose sigmoid is the pair's relevance score."""

    default_pooling_type = "CLS"
    _skip_prefixes = ("cls.",)

    def __init__(self, ctx: ModelContext) -> None:
        super().__init__(ctx)
        c = ctx.hf_config
        self.num_labels = int(getattr(c, "num_labels", 2))
        self.pooler = nn.Module()
        self.pooler.dense = ReplicatedLinear(c.hidden_size, c.hidden_size, True, ctx.dtype)
        self.classifier = ReplicatedLinear(c.hidden_size, self.num_labels, True, ctx.dtype)

    def pooler_head(self, pooled: torch.Tensor) -> torch.Tensor:
        """CLS hidden states [n, hidden] -> classifier logits [n, num_labels]."""
        return self.classifier(torch.tanh(self.pooler.dense(pooled)))
