"""``pagoda bench serve`` against a scripted fake OpenAI-compatible streaming server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner

from pagoda.bench.cli import bench
from pagoda.bench.serve import (
    arrival_offsets,
    build_prompts,
    load_bench_tokenizer,
    run_serve_benchmark,
)

FIRST_TOKEN_DELAY = 0.02
TOKEN_DELAY = 0.003


@dataclass
class FakeServer:
    """A streaming OpenAI-compatible server on a free port, run by its own event loop in a
    background thread. It streams one word per requested output token, then a usage chunk and
    ``[DONE]``, and remembers what it received and how many requests were in flight at once."""

    fail_every: int = 0
    stream_error: bool = False
    send_usage: bool = True
    bodies: list[dict] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)
    in_flight: int = 0
    peak_in_flight: int = 0
    base_url: str = ""

    async def models(self, request: web.Request) -> web.Response:
        self.authorizations.append(request.headers.get("Authorization"))
        return web.json_response({"object": "list", "data": [{"id": "fake-model"}]})

    async def generate(self, request: web.Request) -> web.StreamResponse:
        self.authorizations.append(request.headers.get("Authorization"))
        body = await request.json()
        self.bodies.append(body)
        if self.fail_every and len(self.bodies) % self.fail_every == 0:
            error = {"message": "scripted failure", "type": "InternalServerError", "code": 500}
            return web.json_response({"error": error}, status=500)
        chat = request.path.endswith("/chat/completions")
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await self._stream(response, body, chat)
            return response
        finally:
            self.in_flight -= 1

    async def _stream(self, response: web.StreamResponse, body: dict, chat: bool) -> None:
        async def send(payload: Any) -> None:
            data = payload if isinstance(payload, str) else json.dumps(payload)
            await response.write(f"data: {data}\n\n".encode())

        if chat:
            await send({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
        await asyncio.sleep(FIRST_TOKEN_DELAY)
        if self.stream_error:
            await send({"error": {"message": "engine died", "type": "InternalServerError"}})
            return
        n = body["max_tokens"]
        for i in range(n):
            if i:
                await asyncio.sleep(TOKEN_DELAY)
            word = f" w{i}"
            choice = (
                {"index": 0, "delta": {"content": word}} if chat else {"index": 0, "text": word}
            )
            await send({"choices": [choice]})
        finish = {"index": 0, "finish_reason": "length"}
        await send({"choices": [finish | ({"delta": {}} if chat else {"text": ""})]})
        if self.send_usage:
            prompt = body["messages"][0]["content"] if chat else body["prompt"]
            usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": n}
            await send(
                {"choices": [], "usage": usage | {"total_tokens": usage["prompt_tokens"] + n}}
            )
        await send("[DONE]")


@contextlib.contextmanager
def serving(fake: FakeServer) -> Iterator[FakeServer]:
    """Run ``fake`` on 127.0.0.1 (a free port) in a background thread until the block exits."""
    app = web.Application()
    app.router.add_get("/v1/models", fake.models)
    app.router.add_post("/v1/completions", fake.generate)
    app.router.add_post("/v1/chat/completions", fake.generate)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)

    async def start() -> None:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        fake.base_url = f"http://{host}:{port}"

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
    try:
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@pytest.fixture
def server() -> Iterator[FakeServer]:
    """A fresh fake server per test, stopped afterwards."""
    with serving(FakeServer()) as fake:
        yield fake


@pytest.mark.parametrize("endpoint", ["/v1/completions", "/v1/chat/completions"])
def test_all_requests_complete_with_sane_metrics(server: FakeServer, endpoint: str) -> None:
    result = run_serve_benchmark(
        base_url=server.base_url, endpoint=endpoint, num_prompts=12, input_len=40, output_len=6
    )
    assert result["model"] == "fake-model"
    assert (result["completed"], result["failed"]) == (12, 0)
    for record in result["requests"]:
        assert record["success"], record["error"]
        assert record["output_tokens"] == 6
        assert len(record["itl"]) == 6 - 1
        assert FIRST_TOKEN_DELAY * 0.9 <= record["ttft"] < record["e2el"]
        assert record["generated_text"] == " w0 w1 w2 w3 w4 w5"
        assert record["tpot"] == pytest.approx((record["e2el"] - record["ttft"]) / 5)
    assert result["total_output_tokens"] == 12 * 6
    assert result["output_throughput"] == pytest.approx(72 / result["duration"])
    assert result["request_throughput"] == pytest.approx(12 / result["duration"])
    total = result["total_input_tokens"] + 72
    assert result["total_token_throughput"] == pytest.approx(total / result["duration"])
    assert result["mean_ttft_ms"] < result["mean_e2el_ms"]
    assert 0 < result["median_itl_ms"] <= result["p99_itl_ms"]
    assert result["max_concurrent_requests"] == 12


def test_request_body_follows_vllm(server: FakeServer) -> None:
    run_serve_benchmark(
        base_url=server.base_url,
        endpoint="/v1/chat/completions",
        model="named",
        num_prompts=2,
        input_len=20,
        output_len=3,
    )
    body = server.bodies[0]
    assert body["model"] == "named"
    assert body["max_tokens"] == 3
    assert body["ignore_eos"] is True and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"][0]["role"] == "user"


def test_output_tokens_fall_back_to_content_chunks(server: FakeServer) -> None:
    server.send_usage = False
    result = run_serve_benchmark(
        base_url=server.base_url, num_prompts=3, input_len=10, output_len=5
    )
    assert [r["output_tokens"] for r in result["requests"]] == [5, 5, 5]


def test_prompts_have_roughly_the_requested_length() -> None:
    prompts = build_prompts(8, 118, 4, 0.0, seed=0)
    for p in prompts:
        assert p.prompt_len == 118
        assert len(p.prompt.split()) == 100
    again = build_prompts(8, 118, 4, 0.0, seed=0)
    assert [p.prompt for p in prompts] == [p.prompt for p in again]
    lens = [p.output_len for p in build_prompts(50, 100, 100, 0.5, seed=1)]
    assert min(lens) >= 50 and max(lens) <= 150 and len(set(lens)) > 10


def test_prompts_from_a_tokenizer_have_the_requested_token_count(tokenizer_dir: Path) -> None:
    tokenizer = load_bench_tokenizer(str(tokenizer_dir))
    exact = build_prompts(6, 100, 4, 0.0, seed=0, tokenizer=tokenizer)
    words = build_prompts(6, 100, 4, 0.0, seed=0)
    for p, q in zip(exact, words, strict=True):
        assert len(tokenizer.encode(p.prompt, add_special_tokens=False)) == 100
        assert 85 <= len(tokenizer.encode(q.prompt, add_special_tokens=False)) <= 115


def test_poisson_schedule_is_seeded_and_spread() -> None:
    offsets = arrival_offsets(200, 4.0, seed=3)
    assert offsets == arrival_offsets(200, 4.0, seed=3)
    assert offsets != arrival_offsets(200, 4.0, seed=4)
    assert offsets[0] == 0 and offsets == sorted(offsets)
    mean_gap = offsets[-1] / 199
    assert 0.2 <= mean_gap <= 0.3
    assert arrival_offsets(5, math.inf, seed=0) == [0.0] * 5


def test_request_rate_spreads_start_times(server: FakeServer) -> None:
    result = run_serve_benchmark(
        base_url=server.base_url,
        num_prompts=8,
        request_rate=4.0,
        input_len=10,
        output_len=3,
        seed=7,
    )
    starts = [r["start"] for r in result["requests"]]
    expected = arrival_offsets(8, 4.0, seed=7)
    assert expected[-1] > 0.5
    assert [r["scheduled"] for r in result["requests"]] == expected
    for start, want in zip(starts, expected, strict=True):
        assert want <= start < want + 0.1
    assert result["duration"] >= expected[-1]
    assert result["request_rate"] == 4.0


def test_max_concurrency_bounds_requests_in_flight(server: FakeServer) -> None:
    result = run_serve_benchmark(
        base_url=server.base_url, num_prompts=10, max_concurrency=2, input_len=10, output_len=4
    )
    assert result["completed"] == 10
    assert server.peak_in_flight == 2
    assert result["max_concurrent_requests"] == 2


def test_http_errors_count_as_failed(server: FakeServer) -> None:
    server.fail_every = 2
    result = run_serve_benchmark(
        base_url=server.base_url, num_prompts=10, input_len=10, output_len=3
    )
    assert (result["completed"], result["failed"]) == (5, 5)
    errors = [r["error"] for r in result["requests"] if not r["success"]]
    assert errors == ["HTTP 500: scripted failure"] * 5
    assert result["total_output_tokens"] == 5 * 3


def test_error_in_stream_counts_as_failed(server: FakeServer) -> None:
    server.stream_error = True
    result = run_serve_benchmark(
        base_url=server.base_url, num_prompts=3, input_len=10, output_len=3
    )
    assert (result["completed"], result["failed"]) == (0, 3)
    assert {r["error"] for r in result["requests"]} == {"engine died"}
    assert result["request_throughput"] == 0 and result["mean_ttft_ms"] == 0


def test_unreachable_server_counts_as_failed() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run_serve_benchmark(
        base_url=f"http://127.0.0.1:{port}", model="m", num_prompts=2, input_len=5, output_len=2
    )
    assert result["failed"] == 2 and all(r["error"] for r in result["requests"])


def test_cli_writes_result_file_and_plot(server: FakeServer, tmp_path: Path) -> None:
    result_file, plot = tmp_path / "result.json", tmp_path / "latency.png"
    args = ["serve", "--base-url", server.base_url, "--endpoint", "/v1/chat/completions",
            "--num-prompts", "20", "--request-rate", "50", "--input-len", "30",
            "--output-len", "4", "--range-ratio", "0.5", "--result-file", str(result_file),
            "--plot", str(plot)]  # fmt: skip
    out = CliRunner().invoke(bench, args)
    assert out.exit_code == 0, out.output
    assert "Serving Benchmark Result" in out.output
    assert "Mean TTFT (ms):" in out.output and "P99 E2EL (ms):" in out.output
    saved = json.loads(result_file.read_text())
    assert saved["completed"] == 20 and len(saved["requests"]) == 20
    assert {"mean_tpot_ms", "median_itl_ms", "p99_e2el_ms", "total_token_throughput"} <= set(saved)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_api_key_is_sent_as_bearer(server: FakeServer) -> None:
    result = run_serve_benchmark(
        base_url=server.base_url, api_key="sk-test", num_prompts=2, input_len=5, output_len=2
    )
    assert result["completed"] == 2
    assert server.authorizations == ["Bearer sk-test"] * 3  # /v1/models and two requests
