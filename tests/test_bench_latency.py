"""``pagoda bench latency``'s arithmetic, on a fake engine whose run time is scripted."""

from __future__ import annotations

import time
from typing import Any

from pagoda.bench.latency import _line, run_latency


class _ScriptedLLM:
    """Sleeps ``base + per_token * max_tokens`` seconds per generate call."""

    def __init__(self, base: float, per_token: float) -> None:
        self.base, self.per_token = base, per_token

    def generate(self, prompts: Any, params: Any, use_tqdm: bool = False) -> list[Any]:
        time.sleep(self.base + self.per_token * params.max_tokens)
        return []


def test_decode_time_is_total_minus_prefill_per_later_token() -> None:
    out = run_latency(_ScriptedLLM(0.01, 0.004), 2, 8, 11, 0, 3, None, None)
    (r,) = out["results"]
    # 10 decode tokens of 4 ms each; sleep overshoot is a fraction of a millisecond.
    assert 3.5 < r["decode_ms_per_token"] < 5.0
    assert abs(r["decode_tokens_per_s"] - 2 / (r["decode_ms_per_token"] / 1e3)) < 1e-6
    assert "ms/token" in _line(r)


def test_unresolved_decode_is_reported_not_negative() -> None:
    # One output token: there is no decode to time.
    (r,) = run_latency(_ScriptedLLM(0.001, 0.0), 1, 4, 1, 0, 1, None, None)["results"]
    assert r["decode_ms_per_token"] is None and r["decode_tokens_per_s"] is None
    assert "not resolved" in _line(r)
