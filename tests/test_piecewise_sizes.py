"""The token counts the piecewise CUDA graphs are captured at (no GPU needed)."""

from pagoda.core.piecewise_graphs import piecewise_sizes


def test_piecewise_sizes_steps_widen_with_the_size() -> None:
    sizes = piecewise_sizes(2048)
    assert sizes[:3] == [64, 128, 192]
    assert sizes[-1] == 2048 and sizes == sorted(set(sizes))
    gaps = {b: b - a for a, b in zip(sizes, sizes[1:], strict=False)}
    assert gaps[1024] == 64 and gaps[1152] == 128 and gaps[2048] == 128
    # Padding a step to its size never adds more than an eighth above 512 tokens.
    assert all(gap <= (b - gap) / 8 for b, gap in gaps.items() if b - gap >= 512)


def test_piecewise_sizes_end_at_the_token_budget() -> None:
    assert piecewise_sizes(160) == [64, 128, 160]
    assert piecewise_sizes(1100) == [*range(64, 1025, 64), 1100]
    assert piecewise_sizes(64) == [64]
    assert piecewise_sizes(10) == [10]
