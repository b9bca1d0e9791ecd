"""Activation functions of gated MLPs: Triton on CUDA; on the CPU, float32 rows go to a C
kernel (:mod:`pagoda.kernels.cpu_elementwise`) and everything else to torch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pagoda.kernels import cpu_elementwise
from pagoda.layers.linear import LinearBase, UnquantizedLinearMethod


class SiluAndMul(nn.Module):
    """``silu(x[..., :d]) * x[..., d:]`` for the fused gate-up projection's output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda:
            from pagoda.kernels import triton_ops

            return triton_ops.silu_and_mul(x)
        if cpu_elementwise.supports_silu_and_mul(x):
            return cpu_elementwise.silu_and_mul(x)
        d = x.shape[-1] // 2
        return F.silu(x[..., :d]) * x[..., d:]

    def of_projection(self, gate_up: LinearBase, x: torch.Tensor) -> torch.Tensor:
        """``self(gate_up(x))``. CUDA decode batches (up to ``SILU_AND_MUL_MAX_ROWS`` rows) of
        an unquantized weight run it as one Triton kernel that streams the weight once and
        never writes the projection."""
        if x.is_cuda and type(gate_up.linear_method) is UnquantizedLinearMethod:
            from pagoda.kernels import triton_gemv

            if triton_gemv.supports(x, gate_up.weight, triton_gemv.SILU_AND_MUL_MAX_ROWS):
                return triton_gemv.gemv_silu_and_mul(x, gate_up.weight, gate_up.bias)
        return self(gate_up(x))
