"""Paged attention: the torch reference against dense causal attention, and the C decode
kernel against the reference, on fresh random inputs at ragged shapes."""

from __future__ import annotations

import pytest
import torch

from pagoda.kernels import cpu_decode_attention
from pagoda.kernels.attention_ref import decode_attention, gather_slots, prefill_attention, write_kv


def _dense_causal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Textbook attention of the last q.shape[0] positions over all of k, v ([L, heads, d])."""
    n, heads, _ = q.shape
    length, kv_heads, _ = k.shape
    group = heads // kv_heads
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q, k) * scale
    pos_q = torch.arange(length - n, length).unsqueeze(1)
    scores = scores.masked_fill(torch.arange(length).unsqueeze(0) > pos_q, float("-inf"))
    return torch.einsum("hqk,khd->qhd", scores.softmax(-1), v)


def _paged_setup(lengths: list[int], block_size: int, kv_heads: int, dim: int, seed: int):
    """Scatter random K/V of each request into shuffled blocks; return cache, tables, K, V."""
    gen = torch.Generator().manual_seed(seed)
    blocks_per_req = [-(-n // block_size) for n in lengths]
    num_blocks = sum(blocks_per_req) + 3
    perm = torch.randperm(num_blocks, generator=gen).tolist()
    cache = torch.zeros(2, num_blocks, block_size, kv_heads, dim)
    tables, ks, vs, used = [], [], [], 0
    width = max(blocks_per_req)
    for n, nb in zip(lengths, blocks_per_req, strict=True):
        ids = perm[used : used + nb]
        used += nb
        tables.append(ids + [0] * (width - nb))
        k = torch.randn(n, kv_heads, dim, generator=gen)
        v = torch.randn(n, kv_heads, dim, generator=gen)
        slots = torch.tensor([ids[t // block_size] * block_size + t % block_size for t in range(n)])
        write_kv(cache, k, v, slots)
        ks.append(k)
        vs.append(v)
    return cache, torch.tensor(tables, dtype=torch.int32), ks, vs


@pytest.mark.parametrize("block_size", [4, 16])
@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (6, 2), (9, 3)])
def test_prefill_reference_equals_dense_causal_attention_on_ragged_chunks(
    block_size, heads, kv_heads
):
    dim, scale = 32, 32**-0.5
    lengths = [1, 7, 16, 33, 50]
    chunks = [1, 3, 16, 33, 10]  # each request's query chunk = its last `chunk` tokens
    cache, tables, ks, vs = _paged_setup(lengths, block_size, kv_heads, dim, seed=block_size)
    gen = torch.Generator().manual_seed(1)
    qs = [torch.randn(c, heads, dim, generator=gen) for c in chunks]
    qsl = [0]
    for c in chunks:
        qsl.append(qsl[-1] + c)
    chunk_k = torch.cat([ks[i][-c:] for i, c in enumerate(chunks)])
    chunk_v = torch.cat([vs[i][-c:] for i, c in enumerate(chunks)])
    out = prefill_attention(torch.cat(qs), chunk_k, chunk_v, cache, qsl, lengths, tables, scale)
    for i, q in enumerate(qs):
        expected = _dense_causal(q, ks[i], vs[i], scale)
        torch.testing.assert_close(out[qsl[i] : qsl[i + 1]], expected, atol=1e-5, rtol=1e-5)


def test_decode_reference_equals_dense_attention_of_the_last_token():
    heads, kv_heads, dim, bs = 8, 2, 16, 8
    lengths = [1, 9, 24, 40]
    cache, tables, ks, vs = _paged_setup(lengths, bs, kv_heads, dim, seed=3)
    q = torch.randn(len(lengths), heads, dim)
    max_len = max(lengths)
    slots = gather_slots(tables, bs, max_len)
    mask = torch.arange(max_len) < torch.tensor(lengths).unsqueeze(1)
    out = decode_attention(q, cache, slots, mask, 0.25)
    for i in range(len(lengths)):
        expected = _dense_causal(q[i : i + 1], ks[i], vs[i], 0.25)[0]
        torch.testing.assert_close(out[i], expected, atol=1e-5, rtol=1e-5)


needs_c = pytest.mark.skipif(cpu_decode_attention.load() is None, reason="no C compiler")


def _check_c_kernel(lengths, block_size, heads, kv_heads, dim, seed, q_scale=1.0):
    """The C decode kernel against the reference on one random paged batch."""
    cache, tables, _, _ = _paged_setup(lengths, block_size, kv_heads, dim, seed=seed)
    q = torch.randn(len(lengths), heads, dim, generator=torch.Generator().manual_seed(seed))
    q *= q_scale
    max_len = max(lengths)
    slots = gather_slots(tables, block_size, max_len)
    mask = torch.arange(max_len) < torch.tensor(lengths).unsqueeze(1)
    expected = decode_attention(q, cache, slots, mask, dim**-0.5)
    out = cpu_decode_attention.paged_decode_attention(
        q, cache, tables, torch.tensor(lengths, dtype=torch.int32), dim**-0.5
    )
    torch.testing.assert_close(out, expected, atol=2e-5, rtol=1e-5)


@needs_c
@pytest.mark.parametrize("block_size", [1, 16, 32])
@pytest.mark.parametrize("heads,kv_heads,dim", [(9, 3, 64), (4, 4, 128), (8, 1, 32)])
# a batch per request per task, and batches small enough to be split by KV head
@pytest.mark.parametrize("lengths", [[1, 2, 17, 100, 257, 31, 64], [257, 3], [70]])
def test_c_decode_kernel_matches_reference(block_size, heads, kv_heads, dim, lengths):
    _check_c_kernel(lengths, block_size, heads, kv_heads, dim, seed=dim + block_size)


@needs_c
@pytest.mark.parametrize("spread", [10.0, 30.0])
def test_c_decode_kernel_softmax_over_widely_spread_scores(spread: float) -> None:
    """Scores up to ~150 apart: the kernel's vector exp meets arguments below -87 (its clamp)
    and a few weights dominate. (Much wider spreads test float32's rounding of the scores
    themselves, in the reference as much as in the kernel.)"""
    _check_c_kernel([5, 40, 130], 16, 9, 3, 64, seed=7, q_scale=spread)
