"""Pure-torch paged attention: the reference every attention kernel is tested against, and
the CPU path.

KV cache layout of one layer: [2, num_blocks, block_size, num_kv_heads, head_dim]; token t of a
request lives in slot ``block_table[t // block_size] * block_size + t % block_size``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def write_kv(
    kv_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    """Scatter new keys and values ([num_tokens, kv_heads, head_dim]) into their slots."""
    _, num_blocks, block_size, kv_heads, head_dim = kv_cache.shape
    flat = kv_cache.view(2, num_blocks * block_size, kv_heads, head_dim)
    flat[0].index_copy_(0, slot_mapping, k.to(kv_cache.dtype))
    flat[1].index_copy_(0, slot_mapping, v.to(kv_cache.dtype))


def gather_slots(block_tables: torch.Tensor, block_size: int, length: int) -> torch.Tensor:
    """Slot indices [num_reqs, length] of the first ``length`` tokens of each block table row."""
    offsets = torch.arange(block_size, device=block_tables.device)
    slots = block_tables.long().unsqueeze(-1) * block_size + offsets
    return slots.flatten(1)[:, :length]


def prefill_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv_cache: torch.Tensor,
    query_start_loc: list[int],
    seq_lens: list[int],
    block_tables: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """Causal attention of each request's query chunk over its whole context.

    The queries of request i are the last ``n = query_start_loc[i+1] - query_start_loc[i]``
    of its ``seq_lens[i]`` tokens, so query j may see keys ``0 .. seq_lens[i] - n + j``. The
    chunk's own keys and values are ``k``, ``v`` (already written to the cache); only the
    earlier, cached part of the context is read from the cache::

        context  [ cached: from kv_cache via block_tables | chunk: k, v ]
    """
    _, num_blocks, block_size, kv_heads, head_dim = kv_cache.shape
    flat = kv_cache.view(2, num_blocks * block_size, kv_heads, head_dim)
    out = torch.empty_like(q)
    for i, length in enumerate(seq_lens):
        start, end = query_start_loc[i], query_start_loc[i + 1]
        n = end - start
        ki, vi = k[start:end], v[start:end]
        if length > n:
            slots = gather_slots(block_tables[i : i + 1], block_size, length - n)[0]
            ki = torch.cat((flat[0][slots], ki))
            vi = torch.cat((flat[1][slots], vi))
        qi = q[start:end].transpose(0, 1).unsqueeze(0)  # [1, heads, n, d]
        ki = ki.transpose(0, 1).unsqueeze(0)  # [1, kv_heads, L, d]
        vi = vi.transpose(0, 1).unsqueeze(0)
        if n == length:
            o = F.scaled_dot_product_attention(
                qi, ki, vi, is_causal=n > 1, scale=scale, enable_gqa=True
            )
        else:
            visible = torch.arange(length, device=q.device) <= (
                torch.arange(n, device=q.device).unsqueeze(1) + (length - n)
            )
            o = F.scaled_dot_product_attention(
                qi, ki, vi, attn_mask=visible, scale=scale, enable_gqa=True
            )
        out[start:end] = o[0].transpose(0, 1)
    return out


def decode_attention(
    q: torch.Tensor, kv_cache: torch.Tensor, slots: torch.Tensor, mask: torch.Tensor, scale: float
) -> torch.Tensor:
    """One query token per request, all requests at once over padded contexts.

    ``slots`` [num_reqs, max_len] (from :func:`gather_slots`); ``mask`` [num_reqs, max_len] is
    True where a slot belongs to the request's context.
    """
    _, num_blocks, block_size, kv_heads, head_dim = kv_cache.shape
    flat = kv_cache.view(2, num_blocks * block_size, kv_heads, head_dim)
    k = flat[0][slots].transpose(1, 2)  # [B, kv_heads, L, d]
    v = flat[1][slots].transpose(1, 2)
    o = F.scaled_dot_product_attention(
        q.unsqueeze(2), k, v, attn_mask=mask[:, None, None, :], scale=scale, enable_gqa=True
    )
    return o.squeeze(2)
