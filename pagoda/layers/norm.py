"""RMSNorm, with the residual add fused in: on CUDA the Triton kernel, on the CPU in float32
the C kernel (one pass each), elsewhere plain torch. And LayerNorm after a residual add, fused
by a C kernel on the CPU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pagoda.kernels import cpu_layer_norm


class RMSNorm(nn.Module):
    """``x / rms(x) * weight``; with ``residual``, adds it first and returns (normed, sum)."""

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps
        self.shape = (hidden_size,)

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return F.rms_norm(x, self.shape, self.weight, self.eps)
        # Half precision: normalise in float32, then scale in the input dtype (as transformers;
        # the weight is kept in float32 for the CUDA kernel).
        return F.rms_norm(x.float(), self.shape, None, self.eps).to(x.dtype) * self.weight.to(
            x.dtype
        )

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if x.is_cuda:
            from pagoda.kernels import triton_ops

            if residual is None:
                return triton_ops.rms_norm(x, self.weight, self.eps)
            return triton_ops.fused_add_rms_norm(x, residual, self.weight, self.eps)
        if cpu_layer_norm.supports_rms(x, self.weight):
            normed, total = cpu_layer_norm.add_rms_norm(x, residual, self.weight, self.eps)
            return normed if total is None else (normed, total)
        if residual is None:
            return self._norm(x)
        x = x + residual
        return self._norm(x), x


def add_layer_norm_(x: torch.Tensor, residual: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    """``norm(x + residual)`` for [rows, hidden] tensors, using x as scratch (its contents
    afterwards are unspecified; pass a temporary such as a projection's output). On the CPU
    one C pass writes the result over x (the sum rounded to the dtype first, as torch's add
    does); elsewhere plain torch."""
    if (
        x.dim() == 2
        and x.is_contiguous()
        and norm.weight is not None
        and norm.bias is not None
        and cpu_layer_norm.supports(x, norm.weight)
    ):
        return cpu_layer_norm.add_layer_norm(x, residual, norm.weight, norm.bias, norm.eps, x)
    return norm(x.add_(residual))
