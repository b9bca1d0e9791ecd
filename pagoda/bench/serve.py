"""``pagoda bench serve``: load an already running OpenAI-compatible server, like vLLM's
``vllm bench serve``.

Data flow: ``build_prompts`` (random_workload) and ``arrival_offsets`` (seeded Poisson) give
what to send and when; ``benchmark`` sends each at its time, at most ``max_concurrency`` in
flight, and ``_send_request`` parses the SSE stream into a ``RequestRecord``;
``compute_metrics`` turns the records into vLLM's figures for the table, ``--result-file``
and ``--plot``.

Prompts are text, because the server tokenizes them itself. With ``tokenizer`` the token ids
chosen by :func:`pagoda.bench.workload.random_workload` (windows of the bundled corpus) are
decoded, so each prompt is close to its requested length in that tokenizer. Without one the
same windows are taken over the corpus's *words*, ``TOKENS_PER_WORD`` tokens counted per word,
so a prompt is only roughly its requested length; the server's ``usage.prompt_tokens`` (sent
in the final stream chunk) is what the token counts and throughputs use whenever it is present.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp

from pagoda.bench.workload import parse_length, random_workload

ENDPOINTS = ("/v1/completions", "/v1/chat/completions")
TOKENS_PER_WORD = 1.18
"""Tokens per whitespace-separated word of the bundled corpus in the default model's (SmolLM2)
tokenizer; typical English BPE tokenizers land between 1.15 and 1.35."""

METRICS = (
    ("ttft", "Time to First Token", "TTFT"),
    ("tpot", "Time per Output Token (excl. 1st token)", "TPOT"),
    ("itl", "Inter-token Latency", "ITL"),
    ("e2el", "End-to-end Latency", "E2EL"),
)


@dataclass(slots=True)
class ServeRequest:
    """One request to send: the prompt text, its (estimated) token count and the output length."""

    prompt: str
    prompt_len: int
    output_len: int


@dataclass(slots=True)
class RequestRecord:
    """What the client saw of one request. Times are seconds; ``start`` is relative to the
    benchmark's start, ``ttft``, ``itl`` and ``e2el`` to the request's own start."""

    index: int
    scheduled: float
    start: float = 0.0
    ttft: float | None = None
    itl: list[float] = field(default_factory=list)
    e2el: float = 0.0
    prompt_len: int = 0
    output_tokens: int = 0
    generated_text: str = ""
    success: bool = False
    error: str = ""

    @property
    def tpot(self) -> float | None:
        """Mean time per output token after the first, or None with fewer than two tokens."""
        if not self.success or self.ttft is None or self.output_tokens < 2:
            return None
        return (self.e2el - self.ttft) / (self.output_tokens - 1)


def corpus_words() -> list[str]:
    """The bundled corpus text split into whitespace-separated words."""
    return resources.files("pagoda.bench").joinpath("data/corpus.txt").read_text().split()


def build_prompts(
    num_prompts: int,
    input_len: str | int,
    output_len: str | int,
    range_ratio: float,
    seed: int,
    tokenizer: Any = None,
) -> list[ServeRequest]:
    """The random dataset: lengths and corpus windows from ``random_workload`` (see the module
    docstring for how windows become text with and without a tokenizer)."""
    in_range = parse_length(str(input_len), range_ratio)
    out_range = parse_length(str(output_len), range_ratio)
    if tokenizer is not None:
        from pagoda.bench.workload import corpus_token_ids

        workload = random_workload(
            num_prompts, in_range, out_range, seed, corpus_token_ids(tokenizer)
        )
        return [
            ServeRequest(
                tokenizer.decode(r.prompt_token_ids), len(r.prompt_token_ids), r.max_tokens
            )
            for r in workload
        ]
    words = corpus_words()
    workload = random_workload(num_prompts, in_range, out_range, seed, list(range(len(words))))
    requests = []
    for r in workload:
        n_words = max(1, round(len(r.prompt_token_ids) / TOKENS_PER_WORD))
        text = " ".join(words[i] for i in r.prompt_token_ids[:n_words])
        requests.append(ServeRequest(text, len(r.prompt_token_ids), r.max_tokens))
    return requests


def arrival_offsets(num_prompts: int, request_rate: float, seed: int) -> list[float]:
    """Send times in seconds from the start: the first at 0, then exponential gaps of mean
    ``1 / request_rate`` (a Poisson process) from ``random.Random(seed)``; all 0 for ``inf``."""
    if request_rate <= 0:
        raise ValueError(f"request_rate must be > 0, got {request_rate}")
    if math.isinf(request_rate):
        return [0.0] * num_prompts
    rng = random.Random(seed)
    offsets, t = [], 0.0
    for _ in range(num_prompts):
        offsets.append(t)
        t += rng.expovariate(request_rate)
    return offsets


def _payload(endpoint: str, model: str, request: ServeRequest, temperature: float) -> dict:
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": request.output_len,
        "temperature": temperature,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if endpoint == "/v1/chat/completions":
        body["messages"] = [{"role": "user", "content": request.prompt}]
    else:
        body["prompt"] = request.prompt
    return body


def _chunk_text(chunk: dict) -> str:
    """The new text of one stream chunk: ``choices[0].text`` (completions) or
    ``choices[0].delta.content`` (chat); empty for role-only, finish and usage chunks."""
    choices = chunk.get("choices") or []
    if not choices:
        return ""
    choice = choices[0]
    if "delta" in choice:
        return (choice["delta"] or {}).get("content") or ""
    return choice.get("text") or ""


def _error_message(status: int, body: str) -> str:
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict) and error.get("message"):
        return f"HTTP {status}: {error['message']}"
    return f"HTTP {status}: {body.strip()[:500] or 'no body'}"


async def _read_stream(response: aiohttp.ClientResponse, record: RequestRecord, t0: float) -> None:
    """Parse SSE ``data:`` lines until ``data: [DONE]``, filling in ``record``."""
    last = t0
    content_chunks = 0
    usage_tokens: int | None = None
    text_parts: list[str] = []
    async for raw in response.content:
        line = raw.decode("utf-8").strip()
        if not line.startswith("data:"):
            continue
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            break
        chunk = json.loads(data)
        if chunk.get("error"):
            error = chunk["error"]
            record.error = str(error.get("message", error) if isinstance(error, dict) else error)
            return
        now = time.perf_counter()
        text = _chunk_text(chunk)
        if text:
            if record.ttft is None:
                record.ttft = now - t0
            else:
                record.itl.append(now - last)
            last = now
            content_chunks += 1
            text_parts.append(text)
        usage = chunk.get("usage")
        if usage:
            usage_tokens = usage.get("completion_tokens", usage_tokens)
            record.prompt_len = usage.get("prompt_tokens") or record.prompt_len
    else:
        record.error = "stream ended before data: [DONE]"
        return
    record.e2el = time.perf_counter() - t0
    record.generated_text = "".join(text_parts)
    record.output_tokens = usage_tokens if usage_tokens is not None else content_chunks
    if record.ttft is None:
        record.error = "stream carried no output text"
        return
    record.success = True


async def _send_request(
    session: aiohttp.ClientSession,
    url: str,
    body: dict,
    record: RequestRecord,
    bench_start: float,
) -> None:
    """POST one streaming request; failures of any kind end up in ``record.error``."""
    t0 = time.perf_counter()
    record.start = t0 - bench_start
    try:
        async with session.post(url, json=body) as response:
            if response.status // 100 != 2:
                record.error = _error_message(response.status, await response.text())
            else:
                await _read_stream(response, record, t0)
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, UnicodeDecodeError) as exc:
        record.error = f"{type(exc).__name__}: {exc}"
    if not record.success:
        record.e2el = time.perf_counter() - t0


async def fetch_model(session: aiohttp.ClientSession, base_url: str) -> str:
    """The first model id listed by ``GET /v1/models``."""
    async with session.get(f"{base_url}/v1/models") as response:
        if response.status // 100 != 2:
            raise RuntimeError(_error_message(response.status, await response.text()))
        models = (await response.json()).get("data") or []
    if not models:
        raise RuntimeError(f"{base_url}/v1/models lists no model; pass --model")
    return models[0]["id"]


async def benchmark(
    requests: list[ServeRequest],
    offsets: list[float],
    base_url: str,
    endpoint: str,
    model: str | None,
    max_concurrency: int | None,
    api_key: str | None,
    temperature: float,
) -> tuple[list[RequestRecord], float, str, int]:
    """Send ``requests[i]`` at ``offsets[i]`` (never more than ``max_concurrency`` in flight).
    Returns the records, the duration from the first send to the last finish, the model and
    the most requests seen in flight at once."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    timeout = aiohttp.ClientTimeout(total=6 * 3600)
    connector = aiohttp.TCPConnector(limit=max_concurrency or 0)
    semaphore = asyncio.Semaphore(max_concurrency) if max_concurrency else None
    in_flight = peak = 0
    async with aiohttp.ClientSession(
        headers=headers, timeout=timeout, connector=connector
    ) as session:
        if model is None:
            model = await fetch_model(session, base_url)
        url = base_url + endpoint

        async def one(record: RequestRecord, body: dict) -> None:
            nonlocal in_flight, peak
            if semaphore is not None:
                await semaphore.acquire()
            in_flight += 1
            peak = max(peak, in_flight)
            try:
                await _send_request(session, url, body, record, bench_start)
            finally:
                in_flight -= 1
                if semaphore is not None:
                    semaphore.release()

        records = [
            RequestRecord(i, off, prompt_len=r.prompt_len)
            for i, (r, off) in enumerate(zip(requests, offsets, strict=True))
        ]
        tasks = []
        bench_start = time.perf_counter()
        for record, request in zip(records, requests, strict=True):
            delay = bench_start + record.scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            body = _payload(endpoint, model, request, temperature)
            tasks.append(asyncio.create_task(one(record, body)))
        await asyncio.gather(*tasks)
        duration = time.perf_counter() - bench_start
    return records, duration, model, peak


def _percentile(sorted_values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    k = (len(sorted_values) - 1) * p / 100
    lo = math.floor(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def _summary(name: str, values_s: list[float]) -> dict[str, float]:
    """mean, median, std and p99 of ``values_s`` (seconds) in ms; zeros when there are none."""
    if not values_s:
        return {f"{s}_{name}_ms": 0.0 for s in ("mean", "median", "std", "p99")}
    ms = sorted(v * 1000 for v in values_s)
    mean = sum(ms) / len(ms)
    return {
        f"mean_{name}_ms": mean,
        f"median_{name}_ms": _percentile(ms, 50),
        f"std_{name}_ms": math.sqrt(sum((v - mean) ** 2 for v in ms) / len(ms)),
        f"p99_{name}_ms": _percentile(ms, 99),
    }


def compute_metrics(records: list[RequestRecord], duration: float) -> dict[str, Any]:
    """vLLM's serving metrics over the successful requests; ``duration`` in seconds."""
    done = [r for r in records if r.success]
    input_tokens = sum(r.prompt_len for r in done)
    output_tokens = sum(r.output_tokens for r in done)
    metrics: dict[str, Any] = {
        "duration": duration,
        "completed": len(done),
        "failed": len(records) - len(done),
        "total_input_tokens": input_tokens,
        "total_output_tokens": output_tokens,
        "request_throughput": len(done) / duration,
        "output_throughput": output_tokens / duration,
        "total_token_throughput": (input_tokens + output_tokens) / duration,
    }
    metrics |= _summary("ttft", [r.ttft for r in done if r.ttft is not None])
    metrics |= _summary("tpot", [t for r in done if (t := r.tpot) is not None])
    metrics |= _summary("itl", [gap for r in done for gap in r.itl])
    metrics |= _summary("e2el", [r.e2el for r in done])
    return metrics


def format_table(result: dict[str, Any]) -> str:
    """The result as vLLM prints it."""

    def row(label: str, value: Any) -> str:
        text = f"{value:.2f}" if isinstance(value, float) else str(value)
        return f"{label:<40} {text}"

    concurrency = result["max_concurrency"] or "unlimited"
    lines = [
        "{s:{c}^{n}}".format(s=" Serving Benchmark Result ", n=50, c="="),
        row("Successful requests:", result["completed"]),
        row("Failed requests:", result["failed"]),
        row("Maximum request concurrency:", concurrency),
        row("Request rate (req/s):", result["request_rate"]),
        row("Benchmark duration (s):", result["duration"]),
        row("Total input tokens:", result["total_input_tokens"]),
        row("Total generated tokens:", result["total_output_tokens"]),
        row("Request throughput (req/s):", result["request_throughput"]),
        row("Output token throughput (tok/s):", result["output_throughput"]),
        row("Total Token throughput (tok/s):", result["total_token_throughput"]),
    ]
    for key, title, short in METRICS:
        lines.append("{s:{c}^{n}}".format(s=title, n=50, c="-"))
        lines.append(row(f"Mean {short} (ms):", result[f"mean_{key}_ms"]))
        lines.append(row(f"Median {short} (ms):", result[f"median_{key}_ms"]))
        lines.append(row(f"P99 {short} (ms):", result[f"p99_{key}_ms"]))
    lines.append("=" * 50)
    return "\n".join(lines)


def load_bench_tokenizer(name: str) -> Any:
    """A tokenizer by directory, GGUF file, alias or cached hub id (as ``pagoda serve`` does)."""
    from pagoda.config import ModelConfig, resolve_model_path
    from pagoda.core.tokenizer import load_tokenizer

    return load_tokenizer(ModelConfig(model_path=resolve_model_path(name)))


def run_serve_benchmark(
    base_url: str = "http://127.0.0.1:8000",
    endpoint: str = "/v1/completions",
    model: str | None = None,
    num_prompts: int = 64,
    request_rate: float = math.inf,
    max_concurrency: int | None = None,
    input_len: str | int = "110",
    output_len: str | int = "144",
    range_ratio: float = 0.0,
    seed: int = 0,
    tokenizer: str | Any | None = None,
    api_key: str | None = None,
    temperature: float = 0.0,
    result_file: str | Path | None = None,
    plot: str | Path | None = None,
) -> dict[str, Any]:
    """Run the benchmark and return the result: the settings, every metric of
    :func:`compute_metrics`, ``max_concurrent_requests`` (the most seen in flight) and
    ``requests`` (one dict per request). ``tokenizer`` is a name/path or a loaded tokenizer.
    Writes ``result_file`` (JSON) and ``plot`` (PNG) when given."""
    if endpoint not in ENDPOINTS:
        raise ValueError(f"endpoint must be one of {ENDPOINTS}, got {endpoint!r}")
    if num_prompts < 1:
        raise ValueError(f"num_prompts must be >= 1, got {num_prompts}")
    if max_concurrency is not None and max_concurrency < 1:
        raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
    if isinstance(tokenizer, str):
        tokenizer = load_bench_tokenizer(tokenizer)
    requests = build_prompts(num_prompts, input_len, output_len, range_ratio, seed, tokenizer)
    offsets = arrival_offsets(num_prompts, request_rate, seed)
    base_url = base_url.rstrip("/")
    records, duration, model, peak = asyncio.run(
        benchmark(
            requests, offsets, base_url, endpoint, model, max_concurrency, api_key, temperature
        )
    )
    result: dict[str, Any] = {
        "date": datetime.now().isoformat(timespec="seconds"),
        "base_url": base_url,
        "endpoint": endpoint,
        "model": model,
        "tokenizer": getattr(tokenizer, "name_or_path", None),
        "num_prompts": num_prompts,
        "request_rate": request_rate if math.isfinite(request_rate) else "inf",
        "max_concurrency": max_concurrency,
        "input_len": str(input_len),
        "output_len": str(output_len),
        "range_ratio": range_ratio,
        "seed": seed,
        "temperature": temperature,
        **compute_metrics(records, duration),
        "max_concurrent_requests": peak,
        "requests": [asdict(r) | {"tpot": r.tpot} for r in records],
    }
    if result_file:
        Path(result_file).write_text(json.dumps(result, indent=2) + "\n")
    if plot:
        from pagoda.bench.serve_plot import plot_latency_over_time

        plot_latency_over_time(result, plot)
    return result
