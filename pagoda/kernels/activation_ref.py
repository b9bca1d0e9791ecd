"""Pure-torch SiLU-and-mul, the reference of :func:`pagoda.kernels.triton_ops.silu_and_mul`."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """``silu(x[..., :d]) * x[..., d:]`` (as :class:`pagoda.layers.activation.SiluAndMul`)."""
    d = x.shape[-1] // 2
    return F.silu(x[..., :d]) * x[..., d:]
