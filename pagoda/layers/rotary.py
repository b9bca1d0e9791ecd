"""Rotary position embedding (rotate-half style); default, linear, llama3 and yarn scaling.

Triton rotates on CUDA; on the CPU, float32 heads go to a C kernel
(:mod:`pagoda.kernels.cpu_elementwise`) and everything else to torch."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from pagoda.kernels import cpu_elementwise


def rope_parameters(hf_config: Any) -> dict[str, Any]:
    """The rope settings of a HF config, for transformers 4 (rope_theta + rope_scaling) and 5
    (rope_parameters) alike; always has "rope_type" and "rope_theta"."""
    params = dict(getattr(hf_config, "rope_parameters", None) or {})
    scaling = getattr(hf_config, "rope_scaling", None) or {}
    params = {**scaling, **params}
    params.setdefault("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
    params["rope_type"] = params.get("rope_type") or params.get("type") or "default"
    return params


def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def _yarn_inv_freq(
    inv_freq: torch.Tensor, dim: int, base: float, p: dict[str, Any], max_position: int
) -> tuple[torch.Tensor, float]:
    # As transformers: the configured factor wins; the length ratio stands in for a missing one.
    original = p.get("original_max_position_embeddings") or max_position
    factor = p.get("factor") or max_position / original
    attention_factor = p.get("attention_factor")
    if attention_factor is None:
        mscale, mscale_all_dim = p.get("mscale"), p.get("mscale_all_dim")
        if mscale and mscale_all_dim:
            attention_factor = _yarn_mscale(factor, mscale) / _yarn_mscale(factor, mscale_all_dim)
        else:
            attention_factor = _yarn_mscale(factor)
    beta_fast, beta_slow = p.get("beta_fast") or 32, p.get("beta_slow") or 1

    def correction_dim(rotations: float) -> float:
        return dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if p.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    extrapolation = 1 - ramp
    interpolated = inv_freq / factor
    return interpolated * (1 - extrapolation) + inv_freq * extrapolation, float(attention_factor)


def _llama3_inv_freq(inv_freq: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
    factor, low, high = p["factor"], p["low_freq_factor"], p["high_freq_factor"]
    old_len = p["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    return torch.where(is_medium, smoothed, scaled)


def compute_inv_freq(
    rotary_dim: int, params: dict[str, Any], max_position: int
) -> tuple[torch.Tensor, float]:
    """Inverse frequencies and the attention (cos/sin) scaling factor for a rope type."""
    base = float(params["rope_theta"])
    inv_freq = 1.0 / base ** (torch.arange(0, rotary_dim, 2, dtype=torch.float32) / rotary_dim)
    kind = params["rope_type"]
    if kind == "default":
        return inv_freq, 1.0
    if kind == "linear":
        return inv_freq / params["factor"], 1.0
    if kind == "llama3":
        return _llama3_inv_freq(inv_freq, params), 1.0
    if kind == "yarn":
        return _yarn_inv_freq(inv_freq, rotary_dim, base, params, max_position)
    raise ValueError(f"unsupported rope type {kind!r}; supported: default, linear, llama3, yarn")


class RotaryEmbedding(nn.Module):
    """Applies rotary embedding to q and k ([num_tokens, heads, head_dim]) at given positions."""

    def __init__(
        self,
        head_dim: int,
        max_position: int,
        params: dict[str, Any],
        rotary_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.rotary_dim = rotary_dim or head_dim
        inv_freq, scale = compute_inv_freq(self.rotary_dim, params, max_position)
        length = max_position
        if params["rope_type"] != "default" and "factor" in params:
            length = int(max_position * max(1.0, float(params["factor"])))
        freqs = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
        self.register_buffer("cos_cache", freqs.cos() * scale, persistent=False)
        self.register_buffer("sin_cache", freqs.sin() * scale, persistent=False)
        self._memo: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def _rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        rot, rest = x[..., : self.rotary_dim], x[..., self.rotary_dim :]
        x1, x2 = rot.chunk(2, dim=-1)
        out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
        return torch.cat((out, rest), dim=-1) if rest.shape[-1] else out

    def _cos_sin(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        # Every layer of a forward pass rotates at the same positions: look them up once.
        memo = self._memo
        if memo is None or memo[0] is not positions or memo[1].dtype != dtype:
            cos = self.cos_cache[positions].unsqueeze(1).to(dtype)
            sin = self.sin_cache[positions].unsqueeze(1).to(dtype)
            memo = self._memo = (positions, cos, sin)
        return memo[1], memo[2]

    def rotate(self, positions: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Rotate every head of ``x`` [num_tokens, heads, head_dim] (q and k heads together
        when they are laid out side by side, as in a fused QKV output). On CUDA ``x`` is
        rotated in place (it is a view of a fresh projection output) and returned; so it is on
        the CPU when the C kernel takes it (float32), otherwise a new tensor is returned."""
        if x.is_cuda:
            from pagoda.kernels import triton_ops

            # The kernel takes two head groups; any split of x's heads rotates them all.
            mid = (x.shape[1] + 1) // 2
            triton_ops.rotary_embedding(
                positions, x[:, :mid], x[:, mid:], self.cos_cache, self.sin_cache, inplace=True
            )
            return x
        if cpu_elementwise.supports_rotary(x, self.cos_cache):
            return cpu_elementwise.rotary_(positions, x, self.cos_cache, self.sin_cache)
        cos, sin = self._cos_sin(positions, x.dtype)
        return self._rotate(x, cos, sin)

    def forward(
        self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotated copies of q [num_tokens, heads, head_dim] and k [num_tokens, kv_heads,
        head_dim]; q and k are left as they are."""
        if q.is_cuda:
            from pagoda.kernels import triton_ops

            return triton_ops.rotary_embedding(positions, q, k, self.cos_cache, self.sin_cache)
        if cpu_elementwise.supports_rotary(q, self.cos_cache) and cpu_elementwise.supports_rotary(
            k, self.cos_cache
        ):
            return (
                cpu_elementwise.rotary(positions, q, self.cos_cache, self.sin_cache),
                cpu_elementwise.rotary(positions, k, self.cos_cache, self.sin_cache),
            )
        cos, sin = self._cos_sin(positions, q.dtype)
        return self._rotate(q, cos, sin), self._rotate(k, cos, sin)


_ROPE_CACHE: dict[tuple, RotaryEmbedding] = {}


def get_rope(head_dim: int, max_position: int, params: dict[str, Any]) -> RotaryEmbedding:
    """One shared RotaryEmbedding per configuration, so all layers of a model use one table
    (and one position lookup per forward pass)."""
    key = (
        head_dim,
        max_position,
        str(torch.get_default_device()),
        tuple(sorted((k, repr(v)) for k, v in params.items())),
    )
    if key not in _ROPE_CACHE:
        _ROPE_CACHE[key] = RotaryEmbedding(head_dim, max_position, params)
    return _ROPE_CACHE[key]
