"""Bidirectional attention for encoder models (BERT): each request's tokens attend to all of
that request's tokens, nothing is cached.

The batch is the step's flat varlen batch; request i owns rows
``query_start_loc[i]:query_start_loc[i+1]``. Attention runs on a padded view::

    flat    [ a0 a1 a2 | b0 b1 | c0 ]            N rows
    padded  [[a0 a1 a2], [b0 b1 --], [c0 -- --]]  B x L, keys masked where "--"

so one SDPA call covers the batch; the projections and MLPs stay on the unpadded rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pagoda.layers.forward_context import get_forward_context


@dataclass(slots=True)
class VarlenLayout:
    """Where each flat row sits in the padded [B, L] view (built once per forward)."""

    gather: torch.Tensor  # [B * L] flat row of each padded slot (padding -> row 0)
    scatter: torch.Tensor  # [N] padded slot of each flat row
    key_mask: torch.Tensor | None  # [B, 1, 1, L] True for real keys; None when unpadded
    num_seqs: int
    max_len: int


def varlen_layout(device: torch.device) -> VarlenLayout:
    """The padded layout of the current forward context's batch."""
    qsl = get_forward_context().meta.query_start_loc
    lens = [qsl[i + 1] - qsl[i] for i in range(len(qsl) - 1)]
    b, length = len(lens), max(lens)
    lens_t = torch.tensor(lens, device=device)
    starts = torch.tensor(qsl[:-1], device=device)
    cols = torch.arange(length, device=device)
    valid = cols.unsqueeze(0) < lens_t.unsqueeze(1)  # [B, L]
    gather = torch.where(valid, starts.unsqueeze(1) + cols, 0).reshape(-1)
    scatter = valid.reshape(-1).nonzero().squeeze(1)
    mask = None if all(n == length for n in lens) else valid[:, None, None, :]
    return VarlenLayout(gather, scatter, mask, b, length)


def encoder_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: VarlenLayout, scale: float
) -> torch.Tensor:
    """q, k, v [N, heads, head_dim] -> [N, heads, head_dim], attention within each request."""
    n, heads, dim = q.shape
    b, length = layout.num_seqs, layout.max_len

    def padded(x: torch.Tensor) -> torch.Tensor:
        return x[layout.gather].view(b, length, heads, dim).transpose(1, 2)

    out = F.scaled_dot_product_attention(
        padded(q), padded(k), padded(v), attn_mask=layout.key_mask, scale=scale
    )
    return out.transpose(1, 2).reshape(b * length, heads, dim)[layout.scatter]
