"""``pagoda bench latency``'s arithmetic, on a fake engine that advances a fake clock."""

from __future__ import annotations

from typing import Any

import pytest

from pagoda.bench import latency
from pagoda.bench.latency import _line, run_latency


class _ScriptedLLM:
    """Each generate call takes ``base + per_token * max_tokens`` seconds of the fake clock."""

    def __init__(self, base: float, per_token: float) -> None:
        self.base, self.per_token = base, per_token
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def generate(self, prompts: Any, params: Any, use_tqdm: bool = False) -> list[Any]:
        self.now += self.base + self.per_token * params.max_tokens
        return []


def _run(monkeypatch: pytest.MonkeyPatch, llm: _ScriptedLLM, output_len: int) -> dict[str, Any]:
    monkeypatch.setattr(latency.time, "perf_counter", llm.clock)
    (result,) = run_latency(llm, 2, 8, output_len, 0, 3, None, None)["results"]
    return result


def test_decode_time_is_total_minus_prefill_per_later_token(monkeypatch: pytest.MonkeyPatch):
    r = _run(monkeypatch, _ScriptedLLM(0.01, 0.004), 11)
    # total 0.054 s, prefill 0.014 s: 10 decode tokens of 4 ms, 2 rows each
    assert r["decode_ms_per_token"] == pytest.approx(4.0)
    assert r["decode_tokens_per_s"] == pytest.approx(500.0)
    assert "4.00 ms/token" in _line(r)


def test_unresolved_decode_is_reported_not_negative(monkeypatch: pytest.MonkeyPatch):
    # One output token: there is no decode to time.
    r = _run(monkeypatch, _ScriptedLLM(0.01, 0.004), 1)
    assert r["decode_ms_per_token"] is None and r["decode_tokens_per_s"] is None
    assert "not resolved" in _line(r)


def test_a_prefill_slower_than_the_whole_run_is_unresolved(monkeypatch: pytest.MonkeyPatch):
    llm = _ScriptedLLM(0.01, 0.0)
    slow_first = llm.generate

    def generate(prompts: Any, params: Any, use_tqdm: bool = False) -> list[Any]:
        llm.now += 0.005 if params.max_tokens == 1 else 0.0  # noise larger than the decode
        return slow_first(prompts, params, use_tqdm)

    llm.generate = generate  # type: ignore[method-assign]
    r = _run(monkeypatch, llm, 2)
    assert r["decode_ms_per_token"] is None
    assert "not resolved" in _line(r)
