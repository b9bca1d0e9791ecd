"""The Llama family with a sequence-classification head (``*ForSequenceClassification``):
classifiers, cross-encoders and reward models (one label: a causal LM with a scalar head).
The engine pools the last token (as transformers does for unpadded input) and applies the
``score`` head through :meth:`pooler_head`."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from pagoda.interfaces import ModelContext
from pagoda.layers.linear import ReplicatedLinear
from pagoda.layers.weight_loading import load_mapped_weights
from pagoda.plugins.models.llama import LlamaForCausalLM, LlamaModel


class LlamaForSequenceClassification(nn.Module):
    """Llama decoder + ``score`` (hidden -> num_labels, no bias) on the last token."""

    qkv_bias_default = False
    qk_norm = False
    default_pooling_type = "LAST"
    tie_word_embeddings = False

    def __init__(self, ctx: ModelContext) -> None:
        super().__init__()
        c = ctx.hf_config
        self.config = c
        self.num_labels = int(getattr(c, "num_labels", 2))
        qkv_bias = bool(getattr(c, "attention_bias", self.qkv_bias_default))
        self.model = LlamaModel(ctx, qkv_bias, self.qk_norm)
        self.score = ReplicatedLinear(c.hidden_size, self.num_labels, False, ctx.dtype)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, positions)

    def pooler_head(self, pooled: torch.Tensor) -> torch.Tensor:
        """Last-token hidden states [n, hidden] -> logits [n, num_labels]."""
        return self.score(pooled)

    # The runner's memory profile asks every model for logits.
    compute_logits = pooler_head

    # Same checkpoint names as the causal LM (its lm_head is absent: tie_word_embeddings False).
    _map_name = LlamaForCausalLM._map_name

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        return load_mapped_weights(self, weights, self._map_name)


class MistralForSequenceClassification(LlamaForSequenceClassification):
    """Mistral with a classification head."""


class Qwen2ForSequenceClassification(LlamaForSequenceClassification):
    """Qwen2 (QKV biases) with a classification head."""

    qkv_bias_default = True


class Qwen3ForSequenceClassification(LlamaForSequenceClassification):
    """Qwen3 (per-head q/k norm) with a classification head."""

    qk_norm = True
