"""Triton paged attention over the KV cache: KV write, split-KV decode, varlen causal prefill.

KV cache layout of one layer (as :mod:`pagoda.kernels.attention_ref`):
[2, num_blocks, block_size, num_kv_heads, head_dim]; token t of a request lives in slot
``block_table[t // block_size] * block_size + t % block_size``. Every kernel reads the cache
through the block table token by token, so any power-of-two block size works.

Each kernel has a pure-torch function of the same signature (``*_ref`` here, built on
attention_ref), which the tests compare it with.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from pagoda.kernels import pdl
from pagoda.kernels.attention_ref import decode_attention, gather_slots
from pagoda.kernels.attention_ref import prefill_attention as _prefill_attention_ref
from pagoda.kernels.attention_ref import write_kv as write_kv_ref
from pagoda.kernels.device import sm_count

__all__ = [
    "decode_split_plan",
    "paged_decode_attention",
    "paged_decode_attention_ref",
    "prefill_attention",
    "prefill_attention_ref",
    "write_kv",
    "write_kv_ref",
]

_LOG2E = 1.4426950408889634


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _dot_args(dtype: torch.dtype) -> tuple[bool, bool]:
    """(UPCAST, IEEE): the interpreter's tl.dot is wrong for bfloat16 (numpy has no bf16; it
    multiplies the raw bits), so there dot operands are upcast to float32; float32 inputs use
    exact IEEE products on the GPU rather than TF32, so float32 parity with the CPU path holds."""
    return _interpreting(), dtype == torch.float32


# ---------------------------------------------------------------------------------------------
# KV write


@triton.jit
def _write_kv_kernel(
    k_ptr,
    v_ptr,
    cache_ptr,
    slot_ptr,
    stride_kt,
    stride_kh,
    stride_vt,
    stride_vh,
    v_offset,  # elements between the K and V halves of the cache
    KV_HEADS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PDL: tl.constexpr,
):
    pdl.await_previous(PDL)
    t = tl.program_id(0)
    slot = tl.load(slot_ptr + t).to(tl.int64)
    if slot >= 0:  # negative slots are padding (e.g. CUDA-graph batches): skipped
        h = tl.arange(0, BLOCK_H)[:, None]
        d = tl.arange(0, BLOCK_D)[None, :]
        mask = (h < KV_HEADS) & (d < HEAD_DIM)
        dst = cache_ptr + slot * (KV_HEADS * HEAD_DIM) + h * HEAD_DIM + d
        t64 = t.to(tl.int64)
        k = tl.load(k_ptr + t64 * stride_kt + h * stride_kh + d, mask=mask)
        v = tl.load(v_ptr + t64 * stride_vt + h * stride_vh + d, mask=mask)
        tl.store(dst, k.to(cache_ptr.dtype.element_ty), mask=mask)
        tl.store(dst + v_offset, v.to(cache_ptr.dtype.element_ty), mask=mask)


def write_kv(
    kv_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    """Scatter new keys and values ([num_tokens, kv_heads, head_dim]) into their slots.

    ``kv_cache`` must be contiguous; ``k``, ``v`` may be strided views (their last dimension
    contiguous). Tokens whose slot is negative are skipped."""
    num_tokens = k.shape[0]
    if num_tokens == 0:
        return
    _, num_blocks, block_size, kv_heads, head_dim = kv_cache.shape
    assert kv_cache.is_contiguous() and k.stride(2) == 1 and v.stride(2) == 1
    _write_kv_kernel[(num_tokens,)](
        k,
        v,
        kv_cache,
        slot_mapping,
        k.stride(0),
        k.stride(1),
        v.stride(0),
        v.stride(1),
        num_blocks * block_size * kv_heads * head_dim,
        KV_HEADS=kv_heads,
        HEAD_DIM=head_dim,
        BLOCK_H=triton.next_power_of_2(kv_heads),
        BLOCK_D=triton.next_power_of_2(head_dim),
        num_warps=1 if kv_heads * head_dim <= 1024 else 4,
        **pdl.launch_options(k.device, num_tokens),
    )


# ---------------------------------------------------------------------------------------------
# Decode: split-KV (flash-decoding), query heads of one KV head together


# The index arrays arrive as slices at step-dependent offsets (e.g. the prefill requests'
# lengths after the decodes'); specialising on their 16-byte alignment would compile a new
# variant in the middle of serving, for scalar loads that gain nothing from it.
_INDEX_ARRAYS = ["bt_ptr", "seq_lens_ptr"]


@triton.jit
def _online_softmax_tile(
    acc, m_i, l_i, q, k, v, qk_scale, visible, MASKED: tl.constexpr, UPCAST: tl.constexpr,
    IEEE: tl.constexpr,
):  # fmt: skip
    """One key tile of flash attention's online softmax: scores of ``q`` against ``k`` (keys
    outside ``visible`` dropped when MASKED), then the running max ``m_i``, sum ``l_i`` and
    output ``acc`` updated with ``v``. At least one key of the tile must be visible to each
    row that has seen none yet."""
    if UPCAST:
        k = k.to(tl.float32)
        v = v.to(tl.float32)
    if IEEE:
        s = tl.dot(q, tl.trans(k), input_precision="ieee")
    else:
        s = tl.dot(q, tl.trans(k))
    s = s * qk_scale
    if MASKED:
        s = tl.where(visible, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    if IEEE:
        pv = tl.dot(p, v, input_precision="ieee")
    else:
        pv = tl.dot(p.to(v.dtype), v)
    return acc * alpha[:, None] + pv, m_new, l_i


@triton.jit
def _decode_split_span(seq_len, NUM_SPLITS: tl.constexpr, MIN_CHUNK: tl.constexpr, BLOCK_N):
    """Tokens per split of a request's context: at most NUM_SPLITS equal spans of whole tiles,
    each at least MIN_CHUNK tokens, so a short context is not cut into pieces that cost more
    to merge than to read while a long one in the same batch is split evenly."""
    per_split = tl.cdiv(tl.cdiv(seq_len, NUM_SPLITS), BLOCK_N) * BLOCK_N
    return tl.maximum(per_split, MIN_CHUNK)


@triton.jit(do_not_specialize_on_alignment=_INDEX_ARRAYS)
def _decode_split_kernel(
    q_ptr,
    cache_ptr,
    bt_ptr,
    seq_lens_ptr,
    out_ptr,  # [B, H, D] in q's dtype; written when NUM_SPLITS == 1
    mid_o_ptr,  # [B, H, NUM_SPLITS, D] float32
    mid_lse_ptr,  # [B, H, NUM_SPLITS] float32 (log2 domain)
    qk_scale,  # softmax scale * log2(e)
    stride_qb,
    stride_qh,
    stride_ob,
    stride_oh,
    stride_bt,
    v_offset,
    NUM_HEADS: tl.constexpr,
    KV_HEADS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
    NUM_SPLITS: tl.constexpr,
    MIN_CHUNK: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    UPCAST: tl.constexpr,
    IEEE: tl.constexpr,
    PDL: tl.constexpr,
):
    pdl.await_previous(PDL)
    b = tl.program_id(0)
    kvh = tl.program_id(1)
    split = tl.program_id(2)
    GROUP: tl.constexpr = NUM_HEADS // KV_HEADS

    seq_len = tl.load(seq_lens_ptr + b)
    per_split = _decode_split_span(seq_len, NUM_SPLITS, MIN_CHUNK, BLOCK_N)
    start = split * per_split
    end = tl.minimum(start + per_split, seq_len)

    offs_h = tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    heads = kvh * GROUP + offs_h
    h_mask = offs_h < GROUP
    d_mask = offs_d < HEAD_DIM
    q = tl.load(
        q_ptr + b.to(tl.int64) * stride_qb + heads[:, None] * stride_qh + offs_d[None, :],
        mask=h_mask[:, None] & d_mask[None, :],
        other=0.0,
    )
    if UPCAST:
        q = q.to(tl.float32)

    m_i = tl.full([BLOCK_H], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_H], tl.float32)
    acc = tl.zeros([BLOCK_H, BLOCK_D], tl.float32)
    bt_row = bt_ptr + b.to(tl.int64) * stride_bt
    for n0 in range(start, end, BLOCK_N):
        tok = n0 + offs_n
        n_mask = tok < end
        block = tl.load(bt_row + tok // BLOCK_SIZE, mask=n_mask, other=0).to(tl.int64)
        slot = block * BLOCK_SIZE + tok % BLOCK_SIZE
        kv_off = (slot * KV_HEADS + kvh) * HEAD_DIM
        kv_mask = n_mask[:, None] & d_mask[None, :]
        k = tl.load(cache_ptr + kv_off[:, None] + offs_d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(
            cache_ptr + v_offset + kv_off[:, None] + offs_d[None, :], mask=kv_mask, other=0.0
        )
        acc, m_i, l_i = _online_softmax_tile(
            acc, m_i, l_i, q, k, v, qk_scale, n_mask[None, :], True, UPCAST, IEEE
        )

    empty = l_i == 0.0  # a split past the context's end
    o = acc / tl.where(empty, 1.0, l_i)[:, None]
    out_mask = h_mask[:, None] & d_mask[None, :]
    if NUM_SPLITS == 1:
        tl.store(
            out_ptr + b.to(tl.int64) * stride_ob + heads[:, None] * stride_oh + offs_d[None, :],
            o.to(out_ptr.dtype.element_ty),
            mask=out_mask,
        )
    else:
        row = (b.to(tl.int64) * NUM_HEADS + heads) * NUM_SPLITS + split
        # An empty split stores only its -inf weight; the reduce skips its partial. (Returning
        # early from empty splits and writing single-split requests' outputs directly here
        # made batch 8 x 8k 10% slower on H100; docs/perf.md.)
        tl.store(
            mid_o_ptr + row[:, None] * HEAD_DIM + offs_d[None, :],
            o,
            mask=out_mask & ~empty[:, None],
        )
        lse = tl.where(empty, float("-inf"), m_i + tl.log2(tl.where(empty, 1.0, l_i)))
        tl.store(mid_lse_ptr + row, lse, mask=h_mask)


@triton.jit
def _decode_reduce_kernel(
    mid_o_ptr,
    mid_lse_ptr,
    out_ptr,
    stride_ob,
    stride_oh,
    NUM_HEADS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    NUM_SPLITS: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PDL: tl.constexpr,
):
    pdl.await_previous(PDL)
    b = tl.program_id(0)
    h = tl.program_id(1)
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    row = (b.to(tl.int64) * NUM_HEADS + h) * NUM_SPLITS
    lse = tl.load(mid_lse_ptr + row + offs_s, mask=offs_s < NUM_SPLITS, other=float("-inf"))
    s_mask = lse > float("-inf")  # splits that held tokens (split 0 always does)
    m = tl.max(lse, 0)
    w = tl.exp2(lse - m)
    o = tl.load(
        mid_o_ptr + (row + offs_s)[:, None] * HEAD_DIM + offs_d[None, :],
        mask=s_mask[:, None] & (offs_d < HEAD_DIM)[None, :],
        other=0.0,
    )
    res = tl.sum(o * w[:, None], 0) / tl.sum(w, 0)
    tl.store(
        out_ptr + b.to(tl.int64) * stride_ob + h * stride_oh + offs_d,
        res.to(out_ptr.dtype.element_ty),
        mask=offs_d < HEAD_DIM,
    )


# Mid-size batches: this many splits, each of at least _MID_BATCH_SPAN tokens (H100 sweep of
# benchmarks/decode_sweep.py --splits, docs/perf.md).
_MID_BATCH_SPLITS = 8
_MID_BATCH_SPAN = 256


def decode_split_plan(num_reqs: int, kv_heads: int, device: torch.device) -> tuple[int, int]:
    """(splits, minimum tokens per split; 0 for one tile) of each (request, KV head)'s
    context, from the number of such programs against the SM count:

    - at least 2 programs per SM: no splits;
    - at least a third of the SMs: 8 splits of at least 256 tokens, so the long contexts of a
      ragged batch are cut into pieces while short ones are read whole (batch 16-32 of
      Llama-3.1-8B's recipe-3 contexts: 10-15% faster than 2-4 equal splits);
    - fewer: enough splits for about two programs per SM, at most 32 (at batch 8 x 8k and
      batch 1 x 32k, 2 per SM beat 4 per SM by 25-45%).

    It depends on the batch shape only (not on context lengths), so a CUDA graph captured for
    a batch size stays valid; splits past a context's end read nothing."""
    programs = max(1, num_reqs * kv_heads)
    if device.type != "cuda":
        return (4 if programs < 8 else 1), 0
    sms = sm_count(device)
    if programs >= 2 * sms:
        return 1, 0
    if 3 * programs >= sms:
        return _MID_BATCH_SPLITS, _MID_BATCH_SPAN
    return min(32, triton.next_power_of_2(-(-2 * sms // programs))), 0


def _decode_tiles(dim: int) -> tuple[int, int, int]:
    """(BLOCK_N, num_warps, num_stages) of the split kernel. It may depend on the batch shape
    only (never on context lengths): CUDA graphs capture it once per batch size."""
    if _interpreting():
        return 16, 4, 1
    # Three stages in flight: at batch 64 x 4k, 3.00 TB/s against 2.75 with two; at batch 1
    # they kept ITL at 5.97-6.00 ms for 256-1,024 tokens of context and its slope at 2.94
    # TB/s (32-token tiles: 5.95-6.03 ms but 2.34 TB/s; H100, docs/perf.md).
    return (64 if dim <= 128 else 32), 4, 3


def paged_decode_attention(
    q: torch.Tensor,
    kv_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
    num_splits: int | None = None,
    out: torch.Tensor | None = None,
    config: tuple[int, int, int] | None = None,
    min_chunk: int | None = None,
) -> torch.Tensor:
    """One query token per request over its paged context (flash-decoding).

    q [B, H, D] (last dim contiguous); kv_cache [2, num_blocks, block_size, KVH, D] contiguous;
    block_tables [B, max_blocks] int32; seq_lens [B] int32 on q's device, each >= 1.
    Returns (or fills ``out``) [B, H, D] in q's dtype; accumulation is float32. A context is
    read in at most ``num_splits`` spans of at least ``min_chunk`` tokens (0: one tile; both
    default to :func:`decode_split_plan`). ``config`` (BLOCK_N, num_warps, num_stages)
    overrides the default tiles (for tuning)."""
    batch, heads, dim = q.shape
    _, num_blocks, block_size, kv_heads, _ = kv_cache.shape
    if out is None:
        out = torch.empty_like(q)
    if batch == 0:
        return out
    assert kv_cache.is_contiguous() and q.stride(2) == 1 and out.stride(2) == 1
    assert block_tables.stride(1) == 1 and heads % kv_heads == 0
    planned_splits, planned_span = decode_split_plan(batch, kv_heads, q.device)
    if num_splits is None:
        num_splits = planned_splits
    if min_chunk is None:
        min_chunk = planned_span if num_splits == planned_splits else 0
    group = heads // kv_heads
    block_d = triton.next_power_of_2(dim)
    upcast, ieee = _dot_args(q.dtype)
    if num_splits > 1:
        mid_o = torch.empty(batch, heads, num_splits, dim, dtype=torch.float32, device=q.device)
        mid_lse = torch.empty(batch, heads, num_splits, dtype=torch.float32, device=q.device)
    else:
        mid_o = mid_lse = out  # unused
    block_n, warps, stages = config or _decode_tiles(dim)
    _decode_split_kernel[(batch, kv_heads, num_splits)](
        q,
        kv_cache,
        block_tables,
        seq_lens,
        out,
        mid_o,
        mid_lse,
        scale * _LOG2E,
        q.stride(0),
        q.stride(1),
        out.stride(0),
        out.stride(1),
        block_tables.stride(0),
        num_blocks * block_size * kv_heads * dim,
        NUM_HEADS=heads,
        KV_HEADS=kv_heads,
        HEAD_DIM=dim,
        BLOCK_SIZE=block_size,
        NUM_SPLITS=num_splits,
        MIN_CHUNK=min_chunk,
        BLOCK_H=max(16, triton.next_power_of_2(group)),
        BLOCK_N=block_n,
        BLOCK_D=block_d,
        UPCAST=upcast,
        IEEE=ieee,
        num_warps=warps,
        num_stages=stages,
        **pdl.launch_options(q.device, batch),
    )
    if num_splits > 1:
        _decode_reduce_kernel[(batch, heads)](
            mid_o,
            mid_lse,
            out,
            out.stride(0),
            out.stride(1),
            NUM_HEADS=heads,
            HEAD_DIM=dim,
            NUM_SPLITS=num_splits,
            BLOCK_S=triton.next_power_of_2(num_splits),
            BLOCK_D=block_d,
            num_warps=1 if dim * num_splits <= 2048 else 4,
            **pdl.launch_options(q.device, batch),
        )
    return out


def paged_decode_attention_ref(
    q: torch.Tensor,
    kv_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
    num_splits: int | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pure-torch :func:`paged_decode_attention` (``num_splits`` is ignored)."""
    lengths = [int(x) for x in seq_lens.tolist()]
    slots = gather_slots(block_tables, kv_cache.shape[2], max(lengths))
    mask = torch.arange(max(lengths), device=q.device) < seq_lens.to(q.device).unsqueeze(1)
    res = decode_attention(q, kv_cache, slots, mask, scale)
    if out is None:
        return res
    out.copy_(res)
    return out


# ---------------------------------------------------------------------------------------------
# Prefill: flat varlen batch, causal with an offset, everything read through the block table


@triton.jit
def _prefill_tile(
    acc, m_i, l_i, q, q_pos, n0, kv_end, bt_row, cache_ptr, v_offset, kvh, qk_scale,
    offs_n, offs_d, d_mask, KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, UPCAST: tl.constexpr, IEEE: tl.constexpr, MASKED: tl.constexpr,
):  # fmt: skip
    """Read keys n0.. from the paged cache and fold them into the online softmax of the query
    tile ``q`` (rows at context positions ``q_pos``); MASKED applies causality and the
    context's end."""
    tok = n0 + offs_n
    n_mask = tok < kv_end  # all true in the unmasked loop
    if MASKED:
        block = tl.load(bt_row + tok // BLOCK_SIZE, mask=n_mask, other=0).to(tl.int64)
        kv_mask = n_mask[:, None] & d_mask[None, :]
    else:
        block = tl.load(bt_row + tok // BLOCK_SIZE).to(tl.int64)
        kv_mask = d_mask[None, :]
    kv_off = ((block * BLOCK_SIZE + tok % BLOCK_SIZE) * KV_HEADS + kvh) * HEAD_DIM
    k = tl.load(cache_ptr + kv_off[:, None] + offs_d[None, :], mask=kv_mask, other=0.0)
    v = tl.load(cache_ptr + v_offset + kv_off[:, None] + offs_d[None, :], mask=kv_mask, other=0.0)
    # Applied only when MASKED. Key 0 is in a query tile's first key tile, so every row sees
    # a key there.
    visible = (tok[None, :] <= q_pos[:, None]) & n_mask[None, :]
    return _online_softmax_tile(acc, m_i, l_i, q, k, v, qk_scale, visible, MASKED, UPCAST, IEEE)


@triton.jit(do_not_specialize_on_alignment=[*_INDEX_ARRAYS, "qsl_ptr"])
def _prefill_kernel(
    q_ptr,
    cache_ptr,
    bt_ptr,
    qsl_ptr,
    seq_lens_ptr,
    out_ptr,
    qk_scale,
    stride_qt,
    stride_qh,
    stride_ot,
    stride_oh,
    stride_bt,
    v_offset,
    NUM_HEADS: tl.constexpr,
    KV_HEADS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    UPCAST: tl.constexpr,
    IEEE: tl.constexpr,
):
    # Longest (last) query tiles first, so the causal tail does not straggle.
    m_block = tl.num_programs(0) - 1 - tl.program_id(0)
    b = tl.program_id(1)
    h = tl.program_id(2)
    q_start = tl.load(qsl_ptr + b)
    q_len = tl.load(qsl_ptr + b + 1) - q_start
    m0 = m_block * BLOCK_M
    if m0 >= q_len:
        return
    seq_len = tl.load(seq_lens_ptr + b)
    prefix = seq_len - q_len  # query row i sits at context position prefix + i
    kvh = h // (NUM_HEADS // KV_HEADS)

    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    m_mask = offs_m < q_len
    d_mask = offs_d < HEAD_DIM
    rows = (q_start + offs_m).to(tl.int64)
    q = tl.load(
        q_ptr + rows[:, None] * stride_qt + h * stride_qh + offs_d[None, :],
        mask=m_mask[:, None] & d_mask[None, :],
        other=0.0,
    )
    if UPCAST:
        q = q.to(tl.float32)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    bt_row = bt_ptr + b.to(tl.int64) * stride_bt
    q_pos = prefix + offs_m
    # Keys below `full_end` are visible to every row of this tile: that loop has no mask, so
    # its loads and softmax carry no per-element conditions; the rest (the diagonal) do.
    full_end = (prefix + m0) // BLOCK_N * BLOCK_N
    kv_end = tl.minimum(seq_len, prefix + m0 + BLOCK_M)
    for n0 in range(0, full_end, BLOCK_N):
        acc, m_i, l_i = _prefill_tile(
            acc, m_i, l_i, q, q_pos, n0, kv_end, bt_row, cache_ptr, v_offset, kvh, qk_scale,
            offs_n, offs_d, d_mask, KV_HEADS, HEAD_DIM, BLOCK_SIZE, UPCAST, IEEE, False,
        )  # fmt: skip
    for n0 in range(full_end, kv_end, BLOCK_N):
        acc, m_i, l_i = _prefill_tile(
            acc, m_i, l_i, q, q_pos, n0, kv_end, bt_row, cache_ptr, v_offset, kvh, qk_scale,
            offs_n, offs_d, d_mask, KV_HEADS, HEAD_DIM, BLOCK_SIZE, UPCAST, IEEE, True,
        )  # fmt: skip

    o = acc / l_i[:, None]
    tl.store(
        out_ptr + rows[:, None] * stride_ot + h * stride_oh + offs_d[None, :],
        o.to(out_ptr.dtype.element_ty),
        mask=m_mask[:, None] & d_mask[None, :],
    )


def _as_index_tensor(x: torch.Tensor | list[int], device: torch.device) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=torch.int32)
    return torch.tensor(x, dtype=torch.int32, device=device)


def prefill_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv_cache: torch.Tensor,
    query_start_loc: torch.Tensor | list[int],
    seq_lens: torch.Tensor | list[int],
    block_tables: torch.Tensor,
    scale: float,
    max_query_len: int | None = None,
    out: torch.Tensor | None = None,
    config: tuple[int, int, int, int] | None = None,
) -> torch.Tensor:
    """Causal attention of each request's query chunk over its whole context (see
    :func:`pagoda.kernels.attention_ref.prefill_attention`); the chunk's own K/V must already be
    in the cache, which is where they are read from (``k`` and ``v`` are not used).

    ``query_start_loc`` [num_reqs + 1] and ``seq_lens`` [num_reqs] may be int32 device tensors
    (no host sync then, given ``max_query_len``) or lists. ``config`` (BLOCK_M, BLOCK_N,
    num_warps, num_stages) overrides the default tiles (for tuning)."""
    num_tokens, heads, dim = q.shape
    _, num_blocks, block_size, kv_heads, _ = kv_cache.shape
    if out is None:
        out = torch.empty_like(q)
    num_reqs = len(query_start_loc) - 1
    if num_tokens == 0 or num_reqs == 0:
        return out
    if max_query_len is None:
        if isinstance(query_start_loc, torch.Tensor):
            max_query_len = int((query_start_loc[1:] - query_start_loc[:-1]).max())
        else:
            qsl_list = query_start_loc
            max_query_len = max(qsl_list[i + 1] - qsl_list[i] for i in range(num_reqs))
    assert kv_cache.is_contiguous() and q.stride(2) == 1 and out.stride(2) == 1
    assert block_tables.stride(1) == 1 and heads % kv_heads == 0
    qsl = _as_index_tensor(query_start_loc, q.device)
    lens = _as_index_tensor(seq_lens, q.device)
    upcast, ieee = _dot_args(q.dtype)
    if _interpreting():
        block_m, block_n, warps, stages = 16, 16, 4, 1
    elif dim <= 128:
        # H100, causal 8k, Llama-3.1-8B heads: 381 TFLOP/s; the previous one-loop kernel gave
        # 351 with its tiles and 359 at best (kernel_efficiency.py --sweep-prefill).
        block_m, block_n, warps, stages = 128, 64, 4, 3
    else:  # larger heads: smaller tiles, so that q and two K/V stages fit in shared memory
        block_m, block_n, warps, stages = 64, 64, 4, 2
    if ieee and not _interpreting():
        block_m, block_n, stages = 64, 32, 2  # float32 tiles: keep shared memory in bounds
    if config is not None:
        block_m, block_n, warps, stages = config
    grid = (triton.cdiv(max_query_len, block_m), num_reqs, heads)
    _prefill_kernel[grid](
        q,
        kv_cache,
        block_tables,
        qsl,
        lens,
        out,
        scale * _LOG2E,
        q.stride(0),
        q.stride(1),
        out.stride(0),
        out.stride(1),
        block_tables.stride(0),
        num_blocks * block_size * kv_heads * dim,
        NUM_HEADS=heads,
        KV_HEADS=kv_heads,
        HEAD_DIM=dim,
        BLOCK_SIZE=block_size,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_D=triton.next_power_of_2(dim),
        UPCAST=upcast,
        IEEE=ieee,
        num_warps=warps,
        num_stages=stages,
    )
    return out


def prefill_attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv_cache: torch.Tensor,
    query_start_loc: torch.Tensor | list[int],
    seq_lens: torch.Tensor | list[int],
    block_tables: torch.Tensor,
    scale: float,
    max_query_len: int | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pure-torch :func:`prefill_attention` (attention_ref's, accepting tensors too)."""
    qsl = query_start_loc.tolist() if isinstance(query_start_loc, torch.Tensor) else query_start_loc
    lens = seq_lens.tolist() if isinstance(seq_lens, torch.Tensor) else seq_lens
    res = _prefill_attention_ref(q, k, v, kv_cache, qsl, lens, block_tables, scale)
    if out is None:
        return res
    out.copy_(res)
    return out
