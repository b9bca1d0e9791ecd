"""Pure-torch RMSNorm, the reference of :mod:`pagoda.kernels.triton_ops`' norms (same numbers
as :class:`pagoda.layers.norm.RMSNorm`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``x / rms(x) * weight`` over the last dimension. Half precision normalises in float32,
    rounds to x's dtype, then scales (as transformers)."""
    if x.dtype == torch.float32:
        return F.rms_norm(x, (x.shape[-1],), weight.float(), eps)
    return F.rms_norm(x.float(), (x.shape[-1],), None, eps).to(x.dtype) * weight.to(x.dtype)


def fused_add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``s = x + residual``; returns ``(rms_norm(s), s)``."""
    s = x + residual
    return rms_norm(s, weight, eps), s
