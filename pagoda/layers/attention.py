"""The attention layer models use: it owns a KV-cache slot and delegates to the step's backend."""

from __future__ import annotations

import torch
from torch import nn

from pagoda.layers.forward_context import ForwardContext, get_forward_context


class Attention(nn.Module):
    """Paged attention over this layer's KV cache ([2, num_blocks, block_size, kv_heads, head_dim]).

    The model runner assigns ``kv_cache`` after sizing the pool; the backend and the batch
    metadata come from the forward context.
    """

    def __init__(self, num_heads: int, head_dim: int, scale: float, num_kv_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.scale = scale
        self.num_kv_heads = num_kv_heads
        self.kv_cache = torch.empty(0)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        ctx = get_forward_context()
        if ctx.split_at_attention is not None:
            return ctx.split_at_attention(self, q, k, v)
        return self.attend(ctx, q, k, v)

    def attend(
        self, ctx: ForwardContext, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> torch.Tensor:
        """Attention of the step in ``ctx`` over this layer's cache: [tokens, heads * dim]."""
        n = q.shape[0]
        out = ctx.backend.forward(
            q.reshape(n, self.num_heads, self.head_dim),
            k.reshape(n, self.num_kv_heads, self.head_dim),
            v.reshape(n, self.num_kv_heads, self.head_dim),
            self.kv_cache,
            ctx.meta,
            self.scale,
        )
        return out.reshape(n, self.num_heads * self.head_dim)
