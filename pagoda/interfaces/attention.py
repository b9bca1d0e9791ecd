"""The contract an attention backend implements."""

from __future__ import annotations

from typing import Protocol

import torch

from pagoda.layers.attention_metadata import AttentionMetadata


class AttentionBackend(Protocol):
    """Computes attention for a flat varlen batch over a paged KV cache.

    The KV cache of one layer is a tensor [2, num_blocks, block_size, num_kv_heads, head_dim].
    """

    def prepare(self, meta: AttentionMetadata) -> None:
        """Called once per step before the forward pass; may precompute per-step data."""
        ...

    def forward(
        self,
        q: torch.Tensor,  # [num_tokens, num_heads, head_dim]
        k: torch.Tensor,  # [num_tokens, num_kv_heads, head_dim]
        v: torch.Tensor,
        kv_cache: torch.Tensor,
        meta: AttentionMetadata,
        scale: float,
    ) -> torch.Tensor:
        """Write k, v at ``meta.slot_mapping``, then attend; returns [tokens, heads, head_dim]."""
        ...
