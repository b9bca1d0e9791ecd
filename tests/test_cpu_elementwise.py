"""The CPU's C SiLU-and-mul and rotary kernels against their pure-torch references, and the
layers that pick them (with the C kernels and without)."""

from __future__ import annotations

import pytest
import torch

from pagoda.kernels import activation_ref, cpu_elementwise, rotary_ref
from pagoda.layers.activation import SiluAndMul
from pagoda.layers.rotary import RotaryEmbedding

needs_c = pytest.mark.skipif(cpu_elementwise.load() is None, reason="no C compiler")

ROPE = {"rope_type": "default", "rope_theta": 10000.0}


def cos_sin(max_position: int, rotary_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    rope = RotaryEmbedding(rotary_dim, max_position, ROPE)
    return rope.cos_cache, rope.sin_cache


@pytest.fixture
def no_c_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """The layers as they run where no C compiler is available."""
    monkeypatch.setattr(cpu_elementwise, "load", lambda: None)


@needs_c
@pytest.mark.parametrize("rows", [1, 7, 64, 300])
@pytest.mark.parametrize("d", [40, 100, 1536])
def test_silu_and_mul_matches_torch(rows: int, d: int) -> None:
    """d 40 and 100 leave a partial vector; x is a strided view (rows of a wider tensor)."""
    torch.manual_seed(rows * d)
    x = (torch.randn(rows, 2 * d + 24) * 4)[:, 3 : 3 + 2 * d]
    out = cpu_elementwise.silu_and_mul(x)
    assert out.shape == (rows, d) and out.is_contiguous()
    torch.testing.assert_close(out, activation_ref.silu_and_mul(x), rtol=1e-6, atol=1e-30)


@needs_c
def test_silu_and_mul_at_extreme_gates() -> None:
    """exp saturates without NaNs: large negative gates give (signed) zero, large positive
    ones the up value times the gate."""
    gate = torch.tensor([[-1e30, -200.0, -88.5, -87.0, -20.0, 0.0, 20.0, 88.5, 200.0, 1e30]])
    x = torch.cat((gate, torch.full_like(gate, 0.5)), dim=1)
    torch.testing.assert_close(
        cpu_elementwise.silu_and_mul(x), activation_ref.silu_and_mul(x), rtol=1e-6, atol=1e-30
    )


@needs_c
@pytest.mark.parametrize("tokens", [1, 7, 64, 300])
@pytest.mark.parametrize("head_dim, rotary_dim", [(64, 64), (64, 32), (128, 128), (80, 80)])
def test_rotary_matches_torch(tokens: int, head_dim: int, rotary_dim: int) -> None:
    """Positions out of order; rotary_dim 32 of 64 passes half of each head through; head_dim
    80 leaves a partial vector in each half. Both products are rounded as torch's are, so the
    result is bit for bit torch's."""
    torch.manual_seed(tokens + head_dim + rotary_dim)
    cos, sin = cos_sin(4096, rotary_dim)
    positions = torch.randperm(4096)[:tokens]
    q, k = torch.randn(tokens, 9, head_dim), torch.randn(tokens, 3, head_dim)
    expected_q, expected_k = rotary_ref.rotary_embedding(positions, q, k, cos, sin)
    out_q = cpu_elementwise.rotary(positions, q, cos, sin)
    assert out_q.is_contiguous()
    torch.testing.assert_close(out_q, expected_q, rtol=0, atol=0)
    assert cpu_elementwise.rotary_(positions, k, cos, sin) is k
    torch.testing.assert_close(k, expected_k, rtol=0, atol=0)


@needs_c
@pytest.mark.parametrize("tokens", [1, 37, 300])
def test_rotary_in_place_on_a_fused_qkv_view_leaves_v(tokens: int) -> None:
    """q and k heads of a fused QKV output viewed as [T, 12, 64] with row stride 960, as the
    Llama attention rotates them: they match the reference, v's columns are untouched."""
    torch.manual_seed(tokens)
    cos, sin = cos_sin(2048, 64)
    positions = torch.randint(0, 2048, (tokens,))
    qkv = torch.randn(tokens, 960)
    before = qkv.clone()
    qk = qkv[:, :768].view(tokens, 12, 64)
    expected_q, expected_k = rotary_ref.rotary_embedding(positions, qk[:, :9], qk[:, 9:], cos, sin)
    cpu_elementwise.rotary_(positions, qk, cos, sin)
    torch.testing.assert_close(qk[:, :9], expected_q, rtol=0, atol=0)
    torch.testing.assert_close(qk[:, 9:], expected_k, rtol=0, atol=0)
    assert torch.equal(qkv[:, 768:], before[:, 768:])


@needs_c
def test_rotary_into_a_strided_output_copies_the_pass_through_features() -> None:
    torch.manual_seed(5)
    cos, sin = cos_sin(512, 32)
    positions = torch.randint(0, 512, (11,))
    x = torch.randn(11, 4, 64)
    out = torch.full((11, 6, 64), float("nan"))[:, 1:5]
    cpu_elementwise.rotary(positions, x, cos, sin, out=out)
    expected, _ = rotary_ref.rotary_embedding(positions, x, x[:, :1], cos, sin)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def layer_outputs() -> tuple[torch.Tensor, ...]:
    """SiluAndMul and RotaryEmbedding (rotate and forward, rotary_dim 32 of 64) on fixed
    float32 inputs, through whichever path the layers pick."""
    torch.manual_seed(6)
    gate_up = torch.randn(9, 2 * 100)
    rope = RotaryEmbedding(64, 1024, ROPE, rotary_dim=32)
    positions = torch.randint(0, 1024, (9,))
    qkv = torch.randn(9, 14 * 64)
    qk = rope.rotate(positions, qkv[:, : 12 * 64].view(9, 12, 64))
    q, k = torch.randn(9, 9, 64), torch.randn(9, 3, 64)
    q_in, k_in = q.clone(), k.clone()
    q_out, k_out = rope(positions, q, k)
    assert torch.equal(q, q_in) and torch.equal(k, k_in), "forward must not change q or k"
    return SiluAndMul()(gate_up), qk, q_out, k_out


def reference_outputs() -> tuple[torch.Tensor, ...]:
    torch.manual_seed(6)
    gate_up = torch.randn(9, 2 * 100)
    cos, sin = cos_sin(1024, 32)
    positions = torch.randint(0, 1024, (9,))
    qkv = torch.randn(9, 14 * 64)
    qk = qkv[:, : 12 * 64].view(9, 12, 64)
    rq, rk = rotary_ref.rotary_embedding(positions, qk[:, :9], qk[:, 9:], cos, sin)
    q, k = torch.randn(9, 9, 64), torch.randn(9, 3, 64)
    q_out, k_out = rotary_ref.rotary_embedding(positions, q, k, cos, sin)
    return activation_ref.silu_and_mul(gate_up), torch.cat((rq, rk), dim=1), q_out, k_out


def assert_layers_match_references() -> None:
    for got, expected in zip(layer_outputs(), reference_outputs(), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-30)


@needs_c
def test_layers_use_the_c_kernels_and_match_the_references() -> None:
    assert_layers_match_references()


def test_layers_without_c_kernels_match_the_references(no_c_kernels: None) -> None:
    assert not cpu_elementwise.supports_silu_and_mul(torch.randn(2, 8))
    assert not cpu_elementwise.supports_rotary(torch.randn(2, 3, 8), torch.randn(4, 4))
    assert_layers_match_references()


def test_other_dtypes_take_the_torch_path() -> None:
    """bfloat16 is not the kernels' dtype: the layers fall back to torch and still match."""
    torch.manual_seed(7)
    x = torch.randn(5, 64, dtype=torch.bfloat16)
    assert not cpu_elementwise.supports_silu_and_mul(x)
    torch.testing.assert_close(SiluAndMul()(x), activation_ref.silu_and_mul(x))
    rope = RotaryEmbedding(64, 128, ROPE)
    positions = torch.arange(5)
    q, k = torch.randn(5, 2, 64, dtype=torch.bfloat16), torch.randn(5, 1, 64, dtype=torch.bfloat16)
    assert not cpu_elementwise.supports_rotary(q, rope.cos_cache)
    got = rope(positions, q, k)
    expected = rotary_ref.rotary_embedding(positions, q, k, rope.cos_cache, rope.sin_cache)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, atol=3e-2, rtol=2e-2)


@needs_c
def test_rotary_rejects_a_position_outside_the_caches_and_writes_nothing() -> None:
    cos, sin = cos_sin(16, 64)
    x = torch.randn(3, 2, 64)
    before = x.clone()
    with pytest.raises(IndexError):
        cpu_elementwise.rotary_(torch.tensor([0, 16, 1]), x, cos, sin)
    with pytest.raises(IndexError):
        cpu_elementwise.rotary_(torch.tensor([0, -1, 1]), x, cos, sin)
    assert torch.equal(x, before)


@needs_c
def test_rotary_takes_int32_positions() -> None:
    cos, sin = cos_sin(64, 64)
    positions = torch.tensor([5, 0, 63], dtype=torch.int32)
    x = torch.randn(3, 2, 64)
    expected, _ = rotary_ref.rotary_embedding(positions.long(), x, x[:, :1], cos, sin)
    torch.testing.assert_close(cpu_elementwise.rotary(positions, x, cos, sin), expected)
