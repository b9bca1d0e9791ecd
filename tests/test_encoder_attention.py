"""Encoder (bidirectional, varlen) attention: the CPU's C kernel and its equal-length runs
with bucketed rows, and the accelerators' padded batch, all against per-request SDPA at
ragged lengths; and the offline pooling API's longest-first submission."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pagoda.kernels import cpu_encoder_attention
from pagoda.layers.encoder_attention import (
    Run,
    VarlenLayout,
    bucket_rows,
    encoder_attention,
    equal_length_runs,
    padded_batch,
)
from pagoda.llm_pooling import longest_first

HEADS, DIM = 4, 16
SCALE = DIM**-0.5

needs_c = pytest.mark.skipif(cpu_encoder_attention.load() is None, reason="no C compiler")


def _qsl(lens: list[int]) -> list[int]:
    qsl = [0]
    for n in lens:
        qsl.append(qsl[-1] + n)
    return qsl


def _reference(qkv: torch.Tensor, qsl: list[int], scale: float = SCALE) -> torch.Tensor:
    """Each request on its own, in float32."""
    outs = []
    for a, b in zip(qsl, qsl[1:], strict=False):
        q, k, v = qkv[a:b].float().permute(1, 2, 0, 3)  # 3 x [heads, len, dim]
        outs.append(F.scaled_dot_product_attention(q, k, v, scale=scale).transpose(0, 1))
    return torch.cat(outs)


def test_bucket_rows_pads_at_most_an_eighth_and_reuses_few_sizes() -> None:
    assert [bucket_rows(n) for n in (1, 16, 17, 100, 2000, 2048, 2049)] == [
        16,
        16,
        32,
        112,
        2048,
        2048,
        2304,
    ]
    for n in range(1, 5000):
        assert n <= bucket_rows(n) < n + max(16, n / 8)
    assert len({bucket_rows(n) for n in range(1024, 2049)}) == 9


def test_equal_length_runs_group_consecutive_requests() -> None:
    lens = [5, 5, 3, 5, 5, 5, 1]
    assert equal_length_runs(lens, _qsl(lens)) == [
        Run(0, 2, 5),
        Run(10, 1, 3),
        Run(13, 3, 5),
        Run(28, 1, 1),
    ]


@pytest.mark.parametrize("kernel", ["torch", pytest.param("c", marks=needs_c)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("lens", [[7, 7, 3, 12, 12, 12, 1, 5], [9], [4, 4, 4]])
def test_runs_match_per_request_attention_at_ragged_lengths(
    lens: list[int], dtype: torch.dtype, kernel: str
) -> None:
    torch.manual_seed(0)
    qsl = _qsl(lens)
    rows = bucket_rows(qsl[-1])  # the padding rows belong to no request
    qkv = torch.randn(rows, 3, HEADS, DIM, dtype=dtype)
    cu_seqlens = torch.tensor(qsl, dtype=torch.int32) if kernel == "c" else None
    layout = VarlenLayout(qsl[-1], rows, equal_length_runs(lens, qsl), None, cu_seqlens)
    out = encoder_attention(qkv, layout, SCALE)
    assert out.shape == (rows, HEADS, DIM) and out.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out[: qsl[-1]].float(), _reference(qkv, qsl), atol=tol, rtol=tol)
    assert not out[qsl[-1] :].any()


# bf16: the output is rounded to bf16 (and, on AMX, so are the probabilities): two ulps.
_C_TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1.6e-2}


@needs_c
@pytest.mark.parametrize(
    "dtype, allow_amx",
    [(torch.float32, False), (torch.bfloat16, True), (torch.bfloat16, False)],
)
@pytest.mark.parametrize("dim", [32, 64, 40])
def test_c_kernel_matches_sdpa_at_ragged_lengths(
    dim: int, dtype: torch.dtype, allow_amx: bool
) -> None:
    """Lengths around the kernel's 16-key vectors and 16/32-row tiles; head_dim 40 takes the
    vector path's partial vectors (and no AMX)."""
    torch.manual_seed(2)
    lens, heads, scale = [1, 15, 16, 17, 128, 200, 3, 33], 3, dim**-0.5
    qsl = _qsl(lens)
    rows = qsl[-1] + 5  # rows past the last request are the caller's: left alone
    qkv = torch.randn(rows, 3, heads, dim, dtype=dtype)
    out = torch.full((rows, heads, dim), 7.0, dtype=dtype)
    q, k, v = qkv.unbind(1)
    cu_seqlens = torch.tensor(qsl, dtype=torch.int32)
    cpu_encoder_attention.encoder_attention(q, k, v, cu_seqlens, scale, out, allow_amx=allow_amx)
    tol = _C_TOLERANCE[dtype]
    expected = _reference(qkv, qsl, scale)
    torch.testing.assert_close(out[: qsl[-1]].float(), expected, atol=tol, rtol=tol)
    assert (out[qsl[-1] :] == 7).all()


@needs_c
def test_c_kernel_rejects_mismatched_views() -> None:
    qkv = torch.randn(8, 3, 2, 16)
    q, k, v = qkv.unbind(1)
    cu_seqlens = torch.tensor([0, 8], dtype=torch.int32)
    with pytest.raises(ValueError, match="row stride"):
        cpu_encoder_attention.encoder_attention(
            q, k.contiguous(), v, cu_seqlens, 0.25, torch.empty(8, 2, 16)
        )
    with pytest.raises(ValueError, match="int32"):
        cpu_encoder_attention.encoder_attention(
            q, k, v, cu_seqlens.long(), 0.25, torch.empty(8, 2, 16)
        )


@pytest.mark.parametrize("lens", [[7, 2, 12, 1, 12, 5], [6, 6]])
def test_padded_batch_matches_per_request_attention(lens: list[int]) -> None:
    torch.manual_seed(1)
    qsl = _qsl(lens)
    qkv = torch.randn(qsl[-1], 3, HEADS, DIM)
    padded = padded_batch(lens, qsl, qkv.device)
    assert (padded.key_mask is None) == (len(set(lens)) == 1)
    layout = VarlenLayout(qsl[-1], qsl[-1], [], padded)
    out = encoder_attention(qkv, layout, SCALE)
    torch.testing.assert_close(out, _reference(qkv, qsl), atol=1e-5, rtol=1e-5)


def test_longest_first_orders_every_prompt_kind() -> None:
    prompts = [
        "short",
        {"prompt_token_ids": list(range(9))},
        {"text": "a pair", "text_pair": "of texts"},
        {"prompt": "a longer prompt text"},
        "",
    ]
    assert longest_first(prompts) == [3, 2, 1, 0, 4]
