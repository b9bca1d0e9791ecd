"""Bidirectional attention for encoder models (BERT): each request's tokens attend to all of
that request's tokens, nothing is cached.

The batch is the step's flat varlen batch; request i owns rows
``query_start_loc[i]:query_start_loc[i+1]``. How attention covers it depends on the device.

On an accelerator, one SDPA call runs on a padded view (one launch beats many)::

    flat    [ a0 a1 a2 | b0 b1 | c0 ]            N rows
    padded  [[a0 a1 a2], [b0 b1 --], [c0 -- --]]  B x L, keys masked where "--"

On the CPU, attention costs what it computes, so padding to the step's longest request
wastes most of it (random lengths of 16-128 tokens compute 2.6x the needed scores). There the
batch is cut into runs of consecutive requests of one length, each a strided view of the
rows with no gather, no padding and no mask::

    flat    [ a0 a1 | b0 b1 | c0 c1 c2 ]   runs: [[a0 a1], [b0 b1]] (2 x 2), [[c0 c1 c2]]

A request of a length unlike its neighbours is a run of one. The offline pooling API submits
prompts longest-first, so runs are long there.

Where the C kernel (:mod:`pagoda.kernels.cpu_encoder_attention`: float32 and bfloat16) is
built, it replaces the runs: one call takes every request from ``cu_seqlens``, reads q, k and
v in place from the fused projection and writes each head's output straight into its rows.

Also on the CPU, bf16/fp16 matmuls go through oneDNN, which compiles a kernel for each new
shape (about 3 ms per weight shape); the rows are padded up to one of a few sizes
(``bucket_rows``) so that steps reuse them. The padding rows belong to no request: their
attention output is zero and the model drops them.

The projections and MLPs run on the (unpadded or bucketed) flat rows either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pagoda.kernels import cpu_encoder_attention
from pagoda.layers.forward_context import get_forward_context


@dataclass(slots=True)
class Run:
    """``num_seqs`` consecutive requests of ``seq_len`` tokens each, from row ``start``."""

    start: int
    num_seqs: int
    seq_len: int


@dataclass(slots=True)
class PaddedBatch:
    """Where each flat row sits in the padded [B, L] view."""

    gather: torch.Tensor  # [B * L] flat row of each padded slot (padding -> row 0)
    scatter: torch.Tensor  # [N] padded slot of each flat row
    key_mask: torch.Tensor | None  # [B, 1, 1, L] True for real keys; None when unpadded
    num_seqs: int
    max_len: int


@dataclass(slots=True)
class VarlenLayout:
    """How attention covers the batch (built once per forward): on the CPU ``cu_seqlens``
    (int32) for the C kernel where it is built, else ``runs``; ``padded`` elsewhere.
    ``num_rows`` >= ``num_tokens`` is the row count the model runs."""

    num_tokens: int
    num_rows: int
    runs: list[Run]
    padded: PaddedBatch | None
    cu_seqlens: torch.Tensor | None = None


def bucket_rows(num_tokens: int) -> int:
    """``num_tokens`` rounded up to a multiple of an eighth of the largest power of two not
    above it (at least 16): at most 12.5% padding, eight sizes per octave."""
    granule = max(16, 1 << max(0, num_tokens.bit_length() - 4))
    return -(-num_tokens // granule) * granule


def varlen_layout(device: torch.device, dtype: torch.dtype) -> VarlenLayout:
    """The attention layout of the current forward context's batch."""
    qsl = get_forward_context().meta.query_start_loc
    lens = [qsl[i + 1] - qsl[i] for i in range(len(qsl) - 1)]
    num_tokens = qsl[-1]
    if device.type != "cpu":
        return VarlenLayout(num_tokens, num_tokens, [], padded_batch(lens, qsl, device))
    reduced = dtype in (torch.bfloat16, torch.float16)
    rows = bucket_rows(num_tokens) if reduced else num_tokens
    if cpu_encoder_attention.supports(dtype):
        return VarlenLayout(num_tokens, rows, [], None, torch.tensor(qsl, dtype=torch.int32))
    return VarlenLayout(num_tokens, rows, equal_length_runs(lens, qsl), None)


def equal_length_runs(lens: list[int], qsl: list[int]) -> list[Run]:
    """Maximal runs of consecutive requests of the same length."""
    runs: list[Run] = []
    for i, n in enumerate(lens):
        if runs and runs[-1].seq_len == n:
            runs[-1].num_seqs += 1
        else:
            runs.append(Run(qsl[i], 1, n))
    return runs


def padded_batch(lens: list[int], qsl: list[int], device: torch.device) -> PaddedBatch:
    """The whole batch padded to its longest request, keys masked past each length."""
    b, length = len(lens), max(lens)
    lens_t = torch.tensor(lens, device=device)
    starts = torch.tensor(qsl[:-1], device=device)
    cols = torch.arange(length, device=device)
    valid = cols.unsqueeze(0) < lens_t.unsqueeze(1)  # [B, L]
    gather = torch.where(valid, starts.unsqueeze(1) + cols, 0).reshape(-1)
    scatter = valid.reshape(-1).nonzero().squeeze(1)
    mask = None if all(n == length for n in lens) else valid[:, None, None, :]
    return PaddedBatch(gather, scatter, mask, b, length)


def encoder_attention(qkv: torch.Tensor, layout: VarlenLayout, scale: float) -> torch.Tensor:
    """qkv [rows, 3, heads, head_dim] (the fused projection) -> [rows, heads, head_dim],
    attention within each request."""
    if layout.padded is not None:
        return _padded_attention(qkv, layout.padded, scale)
    rows, _, heads, dim = qkv.shape
    out = qkv.new_empty(rows, heads, dim)
    out[layout.num_tokens :].zero_()
    if layout.cu_seqlens is not None:
        q, k, v = qkv.unbind(1)
        cpu_encoder_attention.encoder_attention(q, k, v, layout.cu_seqlens, scale, out)
        return out
    for run in layout.runs:
        b, length = run.num_seqs, run.seq_len
        stop = run.start + b * length
        q, k, v = qkv[run.start : stop].view(b, length, 3, heads, dim).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v, scale=scale)  # [b, heads, length, dim]
        out[run.start : stop].view(b, length, heads, dim).copy_(o.transpose(1, 2))
    return out


def _padded_attention(qkv: torch.Tensor, p: PaddedBatch, scale: float) -> torch.Tensor:
    _, _, heads, dim = qkv.shape
    b, length = p.num_seqs, p.max_len
    q, k, v = qkv[p.gather].view(b, length, 3, heads, dim).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=p.key_mask, scale=scale)
    return out.transpose(1, 2).reshape(b * length, heads, dim)[p.scatter]
