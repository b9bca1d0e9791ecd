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
    llm: Any,
    requests: list[BenchRequest],
    temperature: float,
    warmup: bool,
    guided: Any = None,
    name: str = "pagoda",
) -> ThroughputResult:
    from pagoda.sampling_params import SamplingParams

    prompts = [{"prompt_token_ids": r.prompt_token_ids} for r in requests]
    params = [
        SamplingParams(
            temperature=temperature,
            max_tokens=r.max_tokens,
            ignore_eos=True,
            guided_decoding=guided,
        )
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
        name, len(requests), sum(len(r.prompt_token_ids) for r in requests), produced, elapsed
    )


class _MaskTimer:
    """Times the guided-decoding work of the step loop from the outside (the engine is not
    changed): each matcher's ``fill_bitmask`` and ``accept_token``, and the sampler's bitmask
    allocation and ``apply_token_bitmask``, per engine step."""

    def __init__(self, llm: Any) -> None:
        self.llm = llm
        self.mask_s = 0.0  # allocate + fill + apply
        self.accept_s = 0.0
        self.steps = 0
        self._undo: list[tuple[Any, str, Any]] = []

    def _patch(self, obj: Any, attr: str, wrapper: Any) -> None:
        self._undo.append((obj, attr, obj.__dict__.get(attr, _MISSING)))
        setattr(obj, attr, wrapper)

    def __enter__(self) -> _MaskTimer:
        from pagoda.core import sampler

        engine = self.llm.llm_engine
        timer = self

        def timed(fn: Any, field: str) -> Any:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    setattr(timer, field, getattr(timer, field) + time.perf_counter() - start)

            return wrapper

        class TimedMatcher:
            def __init__(self, inner: Any) -> None:
                self._inner = inner
                self.fill_bitmask = timed(inner.fill_bitmask, "mask_s")
                self.accept_token = timed(inner.accept_token, "accept_s")

            def __getattr__(self, name: str) -> Any:
                return getattr(self._inner, name)

        class TimedConstraint:
            def __init__(self, inner: Any) -> None:
                self._inner = inner

            def new_matcher(self) -> Any:
                return TimedMatcher(self._inner.new_matcher())

        guided = engine.guided
        compile_fn = guided.compile
        self._patch(guided, "compile", lambda params: TimedConstraint(compile_fn(params)))
        self._patch(
            sampler, "allocate_token_bitmask", timed(sampler.allocate_token_bitmask, "mask_s")
        )
        self._patch(sampler, "apply_token_bitmask", timed(sampler.apply_token_bitmask, "mask_s"))
        step_fn = engine.step

        def step() -> Any:
            timer.steps += 1
            return step_fn()

        self._patch(engine, "step", step)
        return self

    def __exit__(self, *exc: Any) -> None:
        for obj, attr, old in reversed(self._undo):
            if old is _MISSING:
                delattr(obj, attr)
            else:
                setattr(obj, attr, old)


_MISSING = object()


def guided_params_from_options(
    guided_json: str | None,
    guided_regex: str | None,
    guided_choice: str | None,
    backend: str | None,
) -> Any:
    """The bench's constraint (None: none given): a schema file, a regex or a comma list."""
    from pagoda.interfaces.guided import GuidedDecodingParams

    given = [o for o in (guided_json, guided_regex, guided_choice) if o is not None]
    if not given:
        if backend is not None:
            raise click.UsageError(
                "--guided-decoding-backend needs --guided-json, --guided-regex or --guided-choice"
            )
        return None
    if len(given) > 1:
        raise click.UsageError("give one of --guided-json, --guided-regex, --guided-choice")
    if guided_json is not None:
        with open(guided_json) as f:
            return GuidedDecodingParams(json=json.load(f), backend=backend)
    if guided_regex is not None:
        return GuidedDecodingParams(regex=guided_regex, backend=backend)
    choices = [c.strip() for c in (guided_choice or "").split(",") if c.strip()]
    return GuidedDecodingParams(choice=choices, backend=backend)


def run_guided(
    llm: Any,
    requests: list[BenchRequest],
    temperature: float,
    guided: Any,
    baseline: ThroughputResult,
) -> dict[str, Any]:
    """The same workload constrained; reports it against the unconstrained ``baseline``."""
    llm.llm_engine.guided.compile(guided)  # compile (cached) outside the timed run
    with _MaskTimer(llm) as timer:
        result = run_pagoda(
            llm, requests, temperature, False, guided, f"guided:{guided.backend or 'auto'}"
        )
    click.echo(result.line())
    # Unconstrained again after it: the constrained run is bracketed, and compared with the
    # mean of the two unconstrained runs (the first full-size run pays one-time costs).
    again = run_pagoda(llm, requests, temperature, False, None, "pagoda (2)")
    click.echo(again.line())
    base_tps = (baseline.output_tokens_per_s + again.output_tokens_per_s) / 2
    steps = max(timer.steps, 1)
    ratio = result.output_tokens_per_s / base_tps
    click.echo(
        f"guided ({guided.kind}, backend {guided.backend or llm.llm_engine.guided.default_backend})"
        f": {ratio:.3f}x unconstrained output tok/s (mean of the runs before and after) "
        f"({(1 - ratio) * 100:+.1f}% cost); "
        f"mask {timer.mask_s / steps * 1e3:.2f} ms/step (fill + apply), "
        f"accept {timer.accept_s / steps * 1e3:.2f} ms/step, {timer.steps} steps, "
        f"mean output {result.output_tokens / max(result.num_requests, 1):.1f} tokens"
    )
    return {
        **result.as_dict(),
        "constraint": guided.kind,
        "backend": guided.backend or llm.llm_engine.guided.default_backend,
        "unconstrained_output_tokens_per_s": [
            baseline.output_tokens_per_s,
            again.output_tokens_per_s,
        ],
        "relative_output_tokens_per_s": ratio,
        "steps": timer.steps,
        "mean_mask_ms_per_step": timer.mask_s / steps * 1e3,
        "mean_accept_ms_per_step": timer.accept_s / steps * 1e3,
    }


def run_throughput(
    llm: Any,
    requests: list[BenchRequest],
    temperature: float,
    compare: str | None,
    hf_batch_size: int | None,
    output_json: str | None,
    warmup: bool,
    hf_num_prompts: int | None = None,
    guided: Any = None,
) -> list[ThroughputResult]:
    results = [run_pagoda(llm, requests, temperature, warmup)]
    click.echo(results[0].line())
    guided_report = None
    if guided is not None:
        guided_report = run_guided(llm, requests, temperature, guided, results[0])
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
        rows = [r.as_dict() for r in results]
        if guided_report is not None:
            rows.insert(1, guided_report)
        with open(output_json, "w") as f:
            json.dump(rows, f, indent=2)
    return results
