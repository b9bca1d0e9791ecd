"""Pure-torch rotary embedding (rotate-half), the reference of
:func:`pagoda.kernels.triton_ops.rotary_embedding`."""

from __future__ import annotations

import torch


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rotary_dim: int) -> torch.Tensor:
    rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
    x1, x2 = rot.float().chunk(2, dim=-1)
    out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)
    return torch.cat((out, rest), dim=-1) if rest.shape[-1] else out


def rotary_embedding(
    positions: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    cos_cache: torch.Tensor,
    sin_cache: torch.Tensor,
    inplace: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q [T, H, D] and k [T, KVH, D] at ``positions`` [T].

    ``cos_cache``/``sin_cache`` [max_position, rotary_dim // 2] (float32, any scaling already
    folded in); the first ``rotary_dim`` features are rotated (halves paired), the rest pass
    through. Computed in float32, rounded once to the input dtype. With ``inplace``, q and k are
    overwritten and returned."""
    rotary_dim = cos_cache.shape[-1] * 2
    cos = cos_cache[positions].float().unsqueeze(1)
    sin = sin_cache[positions].float().unsqueeze(1)
    q_out, k_out = _rotate(q, cos, sin, rotary_dim), _rotate(k, cos, sin, rotary_dim)
    if inplace:
        q.copy_(q_out)
        k.copy_(k_out)
        return q, k
    return q_out, k_out
