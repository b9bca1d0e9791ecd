"""``pagoda bench latency``: one batch of fixed-length requests, end to end, repeated."""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

import click

from pagoda.bench.workload import BenchRequest


def _time(fn: Any, iters: int) -> list[float]:
    out = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def run_latency(
    llm: Any,
    batch_size: int,
    input_len: int,
    output_len: int,
    warmup_iters: int,
    iters: int,
    compare: str | None,
    output_json: str | None,
    hf_output_len: int | None = None,
    hf_iters: int | None = None,
) -> dict[str, Any]:
    """Time a batch end to end, and the prefill alone (max_tokens=1); the decode time per
    output token is (total - prefill) / (output_len - 1). The two medians come from separate
    runs, so with very few output tokens their difference can be within the noise: a
    difference that is not positive is reported as unresolved (None), never as a rate."""
    from pagoda.sampling_params import SamplingParams

    prompts = [
        {"prompt_token_ids": [(7 * i + j) % 5000 + 100 for j in range(input_len)]}
        for i in range(batch_size)
    ]

    def run(max_tokens: int) -> None:
        llm.generate(
            prompts,
            SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True),
            use_tqdm=False,
        )

    # Distinct prompts per run would defeat nothing here: prefix caching is turned off by the
    # command so every iteration recomputes the prompt.
    _time(lambda: run(output_len), warmup_iters)
    total = _time(lambda: run(output_len), iters)
    prefill = _time(lambda: run(1), max(1, iters))
    result = _summary("pagoda", total, prefill, batch_size, output_len)
    click.echo(_line(result))
    results = [result]
    if compare == "hf":
        from pagoda.bench.hf_baseline import hf_generate, load_hf_model, release_engine

        config = llm.llm_engine.config
        release_engine(llm)
        model = load_hf_model(config)
        hf_len = hf_output_len or output_len
        hf_n = hf_iters or iters
        reqs = [BenchRequest(p["prompt_token_ids"], hf_len) for p in prompts]
        one = [BenchRequest(p["prompt_token_ids"], 1) for p in prompts]
        _time(lambda: hf_generate(model, reqs, batch_size, 0.0, 0), warmup_iters)
        hf_total = _time(lambda: hf_generate(model, reqs, batch_size, 0.0, 0), hf_n)
        hf_prefill = _time(lambda: hf_generate(model, one, batch_size, 0.0, 0), max(1, hf_n))
        results.append(_summary("transformers", hf_total, hf_prefill, batch_size, hf_len))
        click.echo(_line(results[-1]))
    if output_json:
        with open(output_json, "w") as f:
            json.dump(results, f, indent=2)
    return {"results": results}


def _summary(
    engine: str, total: list[float], prefill: list[float], batch: int, output_len: int
) -> dict[str, Any]:
    t, p = statistics.median(total), statistics.median(prefill)
    per_token = (t - p) / max(1, output_len - 1) if output_len > 1 and t > p else None
    return {
        "engine": engine,
        "batch_size": batch,
        "output_len": output_len,
        "latency_s_median": t,
        "latency_s_all": total,
        "prefill_s_median": p,
        "decode_ms_per_token": None if per_token is None else per_token * 1e3,
        "decode_tokens_per_s": None if per_token is None else batch / per_token,
    }


def _line(r: dict[str, Any]) -> str:
    head = (
        f"{r['engine']:>12}: latency {r['latency_s_median']:.3f} s, prefill "
        f"{r['prefill_s_median'] * 1e3:.1f} ms, decode "
    )
    if r["decode_ms_per_token"] is None:
        return head + "not resolved (total - prefill <= 0 or one output token: raise --output-len)"
    return head + f"{r['decode_ms_per_token']:.2f} ms/token ({r['decode_tokens_per_s']:.1f} tok/s)"
