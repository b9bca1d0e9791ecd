"""Token embedding and the LM head (which may share its weight)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pagoda.layers.linear import LinearMethod, UnquantizedLinearMethod, default_weight_loader


class VocabEmbedding(nn.Module):
    """Token id -> embedding row."""

    def __init__(self, vocab_size: int, hidden_size: int, params_dtype: torch.dtype) -> None:
        super().__init__()
        self.num_embeddings = vocab_size
        self.weight = nn.Parameter(
            torch.empty(vocab_size, hidden_size, dtype=params_dtype), requires_grad=False
        )
        self.weight.weight_loader = default_weight_loader  # type: ignore[attr-defined]

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(input_ids, self.weight)


class LMHead(VocabEmbedding):
    """Hidden state -> vocabulary logits. ``tie(embedding)`` shares the embedding's weight.
    Applied as a linear layer (unquantized unless a ``linear_method`` is given), so its weight
    is post-processed the same way after loading."""

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int,
        params_dtype: torch.dtype,
        linear_method: LinearMethod | None = None,
    ) -> None:
        super().__init__(vocab_size, hidden_size, params_dtype)
        self.linear_method = linear_method or UnquantizedLinearMethod()

    def tie(self, embedding: VocabEmbedding) -> None:
        self.weight = embedding.weight

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.linear_method.apply(self, hidden_states)
