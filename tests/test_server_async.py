"""The server with async scheduling (CUDA's default) on the CPU: concurrent streams give the
same greedy text as synchronous offline generation, and a client that disconnects mid-stream
frees its request while a step of it may be in flight, without disturbing another stream."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from test_server import (
    Server,
    metric_samples,
    running_server,
    sample,
    sse_events,
)

from pagoda import LLM, SamplingParams

pytestmark = pytest.mark.slow

PROMPTS = [
    "The capital of France is",
    "1, 2, 3, 4, 5,",
    "Here is a short story about a lighthouse keeper:",
    "def fibonacci(n):",
    "The three primary colours are",
    "Q: What is 12 times 12?\nA:",
]
MAX_TOKENS = 24


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log_path: Path = tmp_path_factory.mktemp("serve_async") / "server.log"
    with running_server(["--async-scheduling", "--max-num-seqs", "16"], log_path) as srv:
        yield srv


def stream_text(url: str, prompt: str) -> str:
    body = {"prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0, "stream": True}
    resp = requests.post(f"{url}/v1/completions", json=body, stream=True, timeout=120)
    assert resp.status_code == 200
    return "".join(
        json.loads(event)["choices"][0]["text"] for event in sse_events(resp) if event != "[DONE]"
    )


def test_concurrent_streams_equal_synchronous_greedy_text(server: Server) -> None:
    offline = LLM()  # the CPU default: synchronous steps
    params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS)
    expected = [o.outputs[0].text for o in offline.generate(PROMPTS, params, use_tqdm=False)]
    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        texts = list(pool.map(lambda p: stream_text(server.url, p), PROMPTS))
    assert texts == expected


def test_disconnect_mid_stream_frees_kv_and_spares_the_other_stream(server: Server) -> None:
    with ThreadPoolExecutor(1) as pool:
        other = pool.submit(stream_text, server.url, PROMPTS[2])
        body = {"prompt": PROMPTS[0], "max_tokens": 2000, "ignore_eos": True, "stream": True}
        resp = requests.post(f"{server.url}/v1/completions", json=body, stream=True, timeout=60)
        events = sse_events(resp)
        for _ in range(4):
            assert next(events) != "[DONE]"
        resp.close()
        text = other.result()
    alone = stream_text(server.url, PROMPTS[2])
    assert text == alone
    for _ in range(100):
        samples = metric_samples(server.url)
        if sample(samples, "pagoda:num_requests_running") == 0:
            break
        time.sleep(0.1)
    assert sample(samples, "pagoda:num_requests_running") == 0
    assert sample(samples, "pagoda:kv_cache_usage_perc") == 0
