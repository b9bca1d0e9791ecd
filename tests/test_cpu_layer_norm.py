"""The CPU's fused residual add + LayerNorm and + RMSNorm (C kernels) against torch's add
then layer_norm / rms_norm, and the layer helpers that pick them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pagoda.kernels import cpu_layer_norm
from pagoda.layers.norm import add_layer_norm_

needs_c = pytest.mark.skipif(cpu_layer_norm.load() is None, reason="no C compiler")

# bf16: the reference rounds like the kernel (sum, then output); their float32 math differs
# in order only, so at most an ulp apart.
_TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1.6e-2}


@needs_c
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows, hidden", [(1, 384), (37, 384), (5, 100)])
def test_add_layer_norm_matches_torch(rows: int, hidden: int, dtype: torch.dtype) -> None:
    """hidden 100 leaves a partial vector; x is a strided view (rows of a wider tensor)."""
    torch.manual_seed(0)
    x = (torch.randn(rows, hidden + 8) * 3 + 1).to(dtype)[:, :hidden]
    residual = torch.randn(rows, hidden, dtype=dtype)
    weight, bias = torch.randn(hidden, dtype=dtype), torch.randn(hidden, dtype=dtype)
    out = cpu_layer_norm.add_layer_norm(x, residual, weight, bias, 1e-12)
    expected = F.layer_norm(x + residual, (hidden,), weight, bias, 1e-12)
    assert out.dtype == dtype and out.is_contiguous()
    tol = _TOLERANCE[dtype]
    torch.testing.assert_close(out.float(), expected.float(), atol=tol, rtol=tol)


@needs_c
def test_add_layer_norm_writes_over_its_input() -> None:
    torch.manual_seed(2)
    x, residual = torch.randn(6, 48), torch.randn(6, 48)
    weight, bias = torch.randn(48), torch.randn(48)
    expected = F.layer_norm(x + residual, (48,), weight, bias, 1e-5)
    out = cpu_layer_norm.add_layer_norm(x, residual, weight, bias, 1e-5, out=x)
    assert out.data_ptr() == x.data_ptr()
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_layer_helper_equals_norm_of_sum(dtype: torch.dtype) -> None:
    torch.manual_seed(1)
    norm = nn.LayerNorm(64, eps=1e-5, dtype=dtype)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    x, residual = torch.randn(9, 64, dtype=dtype), torch.randn(9, 64, dtype=dtype)
    with torch.no_grad():
        expected = norm(x + residual)
        out = add_layer_norm_(x, residual, norm)
    tol = _TOLERANCE[dtype]
    torch.testing.assert_close(out.float(), expected.float(), atol=tol, rtol=tol)


@needs_c
@pytest.mark.parametrize("with_residual", [True, False])
@pytest.mark.parametrize("rows, hidden", [(1, 576), (37, 576), (5, 100)])
def test_add_rms_norm_matches_torch(rows: int, hidden: int, with_residual: bool) -> None:
    """float32; hidden 100 leaves a partial vector; x is a strided view."""
    torch.manual_seed(3)
    x = (torch.randn(rows, hidden + 8) * 3 + 1)[:, :hidden]
    residual = torch.randn(rows, hidden) if with_residual else None
    weight = torch.randn(hidden)
    out, total = cpu_layer_norm.add_rms_norm(x, residual, weight, 1e-5)
    expected_sum = x + residual if residual is not None else x
    expected = F.rms_norm(expected_sum, (hidden,), weight, 1e-5)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    if with_residual:
        torch.testing.assert_close(total, expected_sum, atol=0, rtol=0)
    else:
        assert total is None


@needs_c
def test_rms_norm_layer_uses_the_kernel_for_float32_rows() -> None:
    from pagoda.layers.norm import RMSNorm

    torch.manual_seed(4)
    norm = RMSNorm(64, eps=1e-6)
    norm.weight.data.normal_()
    x, residual = torch.randn(9, 64), torch.randn(9, 64)
    normed, total = norm(x, residual)
    torch.testing.assert_close(total, x + residual, atol=0, rtol=0)
    torch.testing.assert_close(
        normed, F.rms_norm(x + residual, (64,), norm.weight, 1e-6), atol=1e-5, rtol=1e-5
    )
    heads = torch.randn(9, 4, 64)  # per-head q/k norm (3-D): the torch path
    torch.testing.assert_close(norm(heads), F.rms_norm(heads, (64,), norm.weight, 1e-6))
