"""``pagoda bench throughput``: a whole workload offline, optionally against transformers."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

import click

from pagoda.bench.workload import BenchRequest


@dataclass(slots=True)
class ThroughputResult:
    """One engine's figures on one workload."""

    engine: str
    num_requests: int
    prompt_tokens: int
    output_tokens: int
    elapsed_s: float

    @property
    def requests_per_s(self) -> float:
        return self.num_requests / self.elapsed_s

    @property
    def output_tokens_per_s(self) -> float:
        return self.output_tokens / self.elapsed_s

    @property
    def total_tokens_per_s(self) -> float:
        return (self.prompt_tokens + self.output_tokens) / self.elapsed_s

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "requests_per_s": self.requests_per_s,
            "output_tokens_per_s": self.output_tokens_per_s,
            "total_tokens_per_s": self.total_tokens_per_s,
        }

    def line(self) -> str:
        return (
            f"{self.engine:>12}: {self.elapsed_s:8.2f} s  {self.requests_per_s:7.2f} req/s  "
            f"{self.output_tokens_per_s:9.1f} output tok/s  "
            f"{self.total_tokens_per_s:9.1f} total tok/s"
        )


def run_pagoda(
    llm: Any, requests: list[BenchRequest], temperature: float, warmup: bool
) -> ThroughputResult:
    from pagoda.sampling_params import SamplingParams

    prompts = [{"prompt_token_ids": r.prompt_token_ids} for r in requests]
    params = [
        SamplingParams(temperature=temperature, max_tokens=r.max_tokens, ignore_eos=True)
        for r in requests
    ]
    if warmup:
        llm.generate(
            prompts[:4],
            [SamplingParams(max_tokens=8, ignore_eos=True)] * len(prompts[:4]),
            use_tqdm=False,
        )
    start = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    elapsed = time.perf_counter() - start
    produced = sum(len(o.outputs[0].token_ids) for o in outputs)
    return ThroughputResult(
        "pagoda", len(requests), sum(len(r.prompt_token_ids) for r in requests), produced, elapsed
    )


def run_throughput(
    llm: Any,
    requests: list[BenchRequest],
    temperature: float,
    compare: str | None,
    hf_batch_size: int | None,
    output_json: str | None,
    warmup: bool,
    hf_num_prompts: int | None = None,
) -> list[ThroughputResult]:
    results = [run_pagoda(llm, requests, temperature, warmup)]
    click.echo(results[0].line())
    if compare == "hf":
        from pagoda.bench.hf_baseline import hf_generate, load_hf_model, release_engine

        config = llm.llm_engine.config
        pad = llm.get_tokenizer().pad_token_id
        pad = pad if pad is not None else 0
        release_engine(llm)
        model = load_hf_model(config)
        subset = requests[:hf_num_prompts] if hf_num_prompts else requests
        if warmup:
            hf_generate(model, subset[:2], 2, temperature, pad)
        seconds, useful = hf_generate(model, subset, hf_batch_size or len(subset), temperature, pad)
        hf = ThroughputResult(
            "transformers",
            len(subset),
            sum(len(r.prompt_token_ids) for r in subset),
            useful,
            seconds,
        )
        results.append(hf)
        click.echo(hf.line())
        click.echo(
            f"pagoda / transformers output tok/s: "
            f"{results[0].output_tokens_per_s / hf.output_tokens_per_s:.2f}x"
        )
    if output_json:
        with open(output_json, "w") as f:
            json.dump([r.as_dict() for r in results], f, indent=2)
    return results
