"""Triton elementwise kernels: RMSNorm (plain and with the residual add fused), rotary
embedding, SiLU-and-mul. Each has a pure-torch function of the same signature in
norm_ref, rotary_ref and activation_ref."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from pagoda.kernels import pdl

__all__ = ["fused_add_rms_norm", "rms_norm", "rotary_embedding", "silu_and_mul"]


def _rows(x: torch.Tensor) -> torch.Tensor:
    """x as [rows, last] without copying when its last dimension is contiguous."""
    x2 = x.reshape(-1, x.shape[-1])
    return x2 if x2.stride(-1) == 1 else x2.contiguous()


def _warps(block: int) -> int:
    return max(1, min(16, block // 256))


# ---------------------------------------------------------------------------------------------
# RMSNorm


@triton.jit
def _rms_norm_kernel(
    x_ptr,
    res_ptr,
    w_ptr,
    out_ptr,
    sum_ptr,
    stride_x,
    stride_r,
    stride_o,
    stride_s,
    n_cols,
    eps,
    HAS_RESIDUAL: tl.constexpr,
    HALF: tl.constexpr,
    BLOCK: tl.constexpr,
    PDL: tl.constexpr,
):
    pdl.await_previous(PDL)
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0)
    if HAS_RESIDUAL:
        r = tl.load(res_ptr + row * stride_r + cols, mask=mask, other=0.0)
        x = (x.to(tl.float32) + r.to(tl.float32)).to(x_ptr.dtype.element_ty)
        tl.store(sum_ptr + row * stride_s + cols, x, mask=mask)
    xf = x.to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(xf * xf, 0) / n_cols + eps)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    y = xf * rstd
    if HALF:  # round the normalised value first, then scale (as transformers)
        y = y.to(x_ptr.dtype.element_ty).to(tl.float32)
    tl.store(out_ptr + row * stride_o + cols, (y * w).to(out_ptr.dtype.element_ty), mask=mask)


def _launch_norm(x, residual, weight, eps):
    shape, n = x.shape, x.shape[-1]
    x2 = _rows(x)
    out = torch.empty(x2.shape, dtype=x.dtype, device=x.device)
    if residual is not None:
        r2 = _rows(residual)
        total = torch.empty_like(out)
    else:
        r2 = total = out  # unused
    if x2.shape[0]:
        block = triton.next_power_of_2(n)
        _rms_norm_kernel[(x2.shape[0],)](
            x2,
            r2,
            weight,
            out,
            total,
            x2.stride(0),
            r2.stride(0),
            out.stride(0),
            total.stride(0),
            n,
            eps,
            HAS_RESIDUAL=residual is not None,
            HALF=x.dtype != torch.float32,
            BLOCK=block,
            num_warps=_warps(block),
            **pdl.launch_options(x.device, x2.shape[0]),
        )
    return out.view(shape), total.view(shape)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``x / rms(x) * weight`` over the last dimension, accumulated in float32."""
    return _launch_norm(x, None, weight, eps)[0]


def fused_add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``s = x + residual``; returns ``(rms_norm(s), s)`` in one pass."""
    return _launch_norm(x, residual, weight, eps)


# ---------------------------------------------------------------------------------------------
# Rotary embedding (rotate-half)


@triton.jit
def _rotate_heads(
    src_ptr,
    dst_ptr,
    t,
    stride_st,
    stride_sh,
    stride_dt,
    stride_dh,
    cos,
    sin,
    n_heads,
    HALF: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    COPY_REST: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    h = tl.arange(0, BLOCK_H)[:, None]
    r = tl.arange(0, BLOCK_R)[None, :]
    mask = (h < n_heads) & (r < HALF)
    src = src_ptr + t * stride_st + h * stride_sh
    dst = dst_ptr + t * stride_dt + h * stride_dh
    x1 = tl.load(src + r, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(src + HALF + r, mask=mask, other=0.0).to(tl.float32)
    o1 = x1 * cos - x2 * sin
    o2 = x2 * cos + x1 * sin
    tl.store(dst + r, o1.to(dst_ptr.dtype.element_ty), mask=mask)
    tl.store(dst + HALF + r, o2.to(dst_ptr.dtype.element_ty), mask=mask)
    if COPY_REST:  # features past rotary_dim pass through (out of place only)
        d = 2 * HALF + tl.arange(0, BLOCK_D)[None, :]
        rest_mask = (h < n_heads) & (d < HEAD_DIM)
        tl.store(dst + d, tl.load(src + d, mask=rest_mask), mask=rest_mask)


@triton.jit
def _rotary_kernel(
    pos_ptr,
    q_ptr,
    k_ptr,
    qo_ptr,
    ko_ptr,
    cos_ptr,
    sin_ptr,
    stride_qt,
    stride_qh,
    stride_kt,
    stride_kh,
    stride_qot,
    stride_qoh,
    stride_kot,
    stride_koh,
    stride_cache,
    num_heads,
    num_kv_heads,
    HALF: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    COPY_REST: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_KH: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PDL: tl.constexpr,
):
    pdl.await_previous(PDL)
    t = tl.program_id(0).to(tl.int64)
    pos = tl.load(pos_ptr + t).to(tl.int64)
    r = tl.arange(0, BLOCK_R)[None, :]
    cos = tl.load(cos_ptr + pos * stride_cache + r, mask=r < HALF, other=0.0).to(tl.float32)
    sin = tl.load(sin_ptr + pos * stride_cache + r, mask=r < HALF, other=0.0).to(tl.float32)
    _rotate_heads(
        q_ptr, qo_ptr, t, stride_qt, stride_qh, stride_qot, stride_qoh, cos, sin, num_heads,
        HALF, HEAD_DIM, COPY_REST, BLOCK_H, BLOCK_R, BLOCK_D,
    )  # fmt: skip
    _rotate_heads(
        k_ptr, ko_ptr, t, stride_kt, stride_kh, stride_kot, stride_koh, cos, sin, num_kv_heads,
        HALF, HEAD_DIM, COPY_REST, BLOCK_KH, BLOCK_R, BLOCK_D,
    )  # fmt: skip


def rotary_embedding(
    positions: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    cos_cache: torch.Tensor,
    sin_cache: torch.Tensor,
    inplace: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q [T, H, D] and k [T, KVH, D] (strided views allowed, last dim contiguous) at
    ``positions`` [T], with ``cos_cache``/``sin_cache`` [max_position, rotary_dim // 2].
    Computed in float32, rounded once; ``inplace`` overwrites and returns q and k."""
    num_tokens, num_heads, head_dim = q.shape
    num_kv_heads = k.shape[1]
    half = cos_cache.shape[-1]
    assert q.stride(2) == 1 and k.stride(2) == 1 and cos_cache.stride(-1) == 1
    assert cos_cache.stride() == sin_cache.stride() and 2 * half <= head_dim
    if inplace:
        q_out, k_out = q, k
    else:
        q_out, k_out = torch.empty_like(q), torch.empty_like(k)
    if num_tokens == 0:
        return q_out, k_out
    copy_rest = not inplace and 2 * half < head_dim
    _rotary_kernel[(num_tokens,)](
        positions,
        q,
        k,
        q_out,
        k_out,
        cos_cache,
        sin_cache,
        q.stride(0),
        q.stride(1),
        k.stride(0),
        k.stride(1),
        q_out.stride(0),
        q_out.stride(1),
        k_out.stride(0),
        k_out.stride(1),
        cos_cache.stride(0),
        num_heads,
        num_kv_heads,
        HALF=half,
        HEAD_DIM=head_dim,
        COPY_REST=copy_rest,
        BLOCK_H=triton.next_power_of_2(num_heads),
        BLOCK_KH=triton.next_power_of_2(num_kv_heads),
        BLOCK_R=triton.next_power_of_2(half),
        BLOCK_D=triton.next_power_of_2(max(1, head_dim - 2 * half)),
        num_warps=4,
        **pdl.launch_options(q.device, num_tokens),
    )
    return q_out, k_out


# ---------------------------------------------------------------------------------------------
# SiLU-and-mul


@triton.jit
def _silu_and_mul_kernel(
    x_ptr, out_ptr, stride_x, stride_o, d, BLOCK: tl.constexpr, PDL: tl.constexpr
):
    pdl.await_previous(PDL)
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < d
    gate = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(x_ptr + row * stride_x + d + cols, mask=mask, other=0.0).to(tl.float32)
    # Round silu(gate) to the input dtype before the product, as the eager two-op version.
    act = (gate / (1.0 + tl.exp(-gate))).to(x_ptr.dtype.element_ty).to(tl.float32)
    tl.store(out_ptr + row * stride_o + cols, (act * up).to(out_ptr.dtype.element_ty), mask=mask)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """``silu(x[..., :d]) * x[..., d:]`` for the fused gate-up projection's output."""
    d = x.shape[-1] // 2
    x2 = _rows(x)
    out = torch.empty(x2.shape[0], d, dtype=x.dtype, device=x.device)
    if x2.shape[0]:
        block = min(1024, triton.next_power_of_2(d))
        _silu_and_mul_kernel[(x2.shape[0], triton.cdiv(d, block))](
            x2,
            out,
            x2.stride(0),
            out.stride(0),
            d,
            BLOCK=block,
            num_warps=4,
            **pdl.launch_options(x.device, x2.shape[0]),
        )
    return out.view(*x.shape[:-1], d)
