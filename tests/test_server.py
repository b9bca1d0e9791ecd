"""`pagoda serve` as a real subprocess with the default model, driven by the real `openai`
client (and raw HTTP where the client cannot send what we need: bad JSON, huge bodies)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from tiny_models import make_tiny_checkpoint, save_default_tokenizer

BODY_LIMIT = 100_000
MAX_LOG_LEN = 12


# --- a server subprocess (shared with test_server_*.py) ---


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path
    early: dict[str, requests.Response] = field(default_factory=dict)

    def client(self, api_key: str = "unused") -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, timeout=180)

    def async_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=f"{self.url}/v1", api_key="unused", max_retries=0, timeout=180
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(
    args: list[str],
    log_path: Path,
    env: dict[str, str] | None = None,
    ready_timeout: float = 240,
    program: list[str] | None = None,
) -> Server:
    """Start ``pagoda serve ARGS`` (``program`` replaces the ``pagoda`` command) on a free
    port; record the first answers of /health and /v1/models (the model is still loading
    then) and wait until /health is 200."""
    port = free_port()
    log = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    command = program or [str(Path(sys.executable).parent / "pagoda")]
    proc = subprocess.Popen(
        [*command, "serve", *args, "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    log.close()
    server = Server(proc, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + ready_timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log()}")
            try:
                health = requests.get(f"{server.url}/health", timeout=5)
            except requests.ConnectionError:
                time.sleep(0.05)
                continue
            if not server.early:
                server.early["health"] = health
                server.early["models"] = requests.get(f"{server.url}/v1/models", timeout=5)
            if health.status_code == 200:
                return server
            time.sleep(0.2)
        raise RuntimeError(f"server not ready in {ready_timeout} s:\n{server.log()}")
    except BaseException:
        stop_server(server)
        raise


@contextmanager
def running_server(args: list[str], log_path: Path, **kwargs: Any) -> Iterator[Server]:
    """``start_server``, stopped again when the block ends."""
    server = start_server(args, log_path, **kwargs)
    try:
        yield server
    finally:
        stop_server(server)


def stop_server(server: Server) -> int:
    """SIGTERM, then SIGKILL if it lingers; the exit status."""
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(timeout=10)
    return server.proc.returncode


def assert_openai_error(resp: requests.Response, status: int, *fragments: str) -> dict[str, Any]:
    """``resp`` is ``status`` with OpenAI's error envelope, its message holding ``fragments``."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str) and err["type"]
    for fragment in fragments:
        assert fragment in err["message"], err["message"]
    return err


def metric_samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = requests.get(f"{url}/metrics", timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: dict[Any, float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


def sse_events(resp: requests.Response) -> Iterator[str]:
    """The ``data:`` payloads of a server-sent-event stream, as they arrive."""
    for line in resp.iter_lines(chunk_size=1):
        if line.startswith(b"data: "):
            yield line[len(b"data: ") :].decode()


# --- the default-model server for this module ---


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log_path = tmp_path_factory.mktemp("serve") / "server.log"
    args = ["--max-log-len", str(MAX_LOG_LEN), "--max-request-body-bytes", str(BODY_LIMIT)]
    with running_server([*args, "--max-num-seqs", "64"], log_path) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return server.client()


@pytest.fixture(scope="module")
def max_model_len(client: openai.OpenAI) -> int:
    return int(client.models.list().data[0].model_extra["max_model_len"])


CHAT = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Name three colours."},
]


def test_health_and_models_answer_503_while_the_model_loads(server: Server) -> None:
    assert_openai_error(server.early["health"], 503, "loading")
    assert_openai_error(server.early["models"], 503, "loading")
    assert requests.get(f"{server.url}/health", timeout=10).status_code == 200


def test_serve_exits_with_status_1_when_the_model_fails_to_load(tmp_path: Path) -> None:
    """Truncated weights pass the flag checks; the load then fails on the background thread,
    and the server stops, as vLLM's does, rather than answering 503 for ever."""
    tokenizer = save_default_tokenizer(tmp_path / "tokenizer")
    model = make_tiny_checkpoint("LlamaForCausalLM", tmp_path / "broken", tokenizer)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    pagoda = str(Path(sys.executable).parent / "pagoda")
    port = str(free_port())
    proc = subprocess.run(
        [pagoda, "serve", str(model), "--port", port], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1, proc.stderr
    # safetensors' own message about the truncated file
    assert "pagoda serve: the model failed to load: Error while deserializing header" in proc.stderr


def test_models_lists_the_served_model_with_its_context_length(
    client: openai.OpenAI, max_model_len: int
) -> None:
    models = client.models.list().data
    assert [m.id for m in models] == ["smollm2"]
    assert models[0].owned_by == "pagoda"
    assert max_model_len > 0


def test_streaming_chat_gives_the_same_greedy_text_as_non_streaming(
    client: openai.OpenAI,
) -> None:
    full = client.chat.completions.create(
        model="smollm2", messages=CHAT, temperature=0, max_tokens=8
    )
    stream = client.chat.completions.create(
        model="smollm2",
        messages=CHAT,
        temperature=0,
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    finish = [reason for reason in finish if reason]
    assert full.choices[0].message.content
    assert text == full.choices[0].message.content
    assert finish == [full.choices[0].finish_reason]
    assert chunks[-1].choices == []
    assert chunks[-1].usage.model_dump() == full.usage.model_dump()


def test_completion_echo_and_logprobs(client: openai.OpenAI) -> None:
    prompt = "The capital of France is"
    out = client.completions.create(
        model="smollm2", prompt=prompt, echo=True, logprobs=2, max_tokens=4, temperature=0
    )
    choice = out.choices[0]
    assert choice.text.startswith(prompt)
    generated = choice.text[len(prompt) :]
    lp = choice.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 4
    assert "".join(lp.tokens) == generated
    assert lp.text_offset[0] == len(prompt)
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert logprob <= 0
        assert 1 <= len(top) <= 2
        # greedy: the chosen token is the most likely one
        assert top[token] == pytest.approx(max(top.values()))
        assert logprob == pytest.approx(top[token])
    assert out.usage.completion_tokens == 4


def test_n2_returns_two_choices_and_counts_both(client: openai.OpenAI) -> None:
    out = client.completions.create(
        model="smollm2",
        prompt="My favourite fruit is",
        n=2,
        max_tokens=3,
        temperature=1.0,
        seed=1,
        extra_body={"ignore_eos": True},
    )
    assert sorted(c.index for c in out.choices) == [0, 1]
    assert all(c.finish_reason == "length" for c in out.choices)
    assert out.usage.completion_tokens == 6
    chat = client.chat.completions.create(
        model="smollm2", messages=CHAT, n=2, max_tokens=3, extra_body={"ignore_eos": True}
    )
    assert sorted(c.index for c in chat.choices) == [0, 1]
    assert chat.usage.completion_tokens == 6


def test_stop_string_ends_the_text_before_it(client: openai.OpenAI) -> None:
    prompt = "The capital of France is"
    greedy = client.completions.create(
        model="smollm2", prompt=prompt, max_tokens=8, temperature=0
    ).choices[0]
    assert len(greedy.text) >= 6, greedy.text
    stop = greedy.text[3:6]
    expected = greedy.text[: greedy.text.find(stop)]
    out = client.completions.create(
        model="smollm2", prompt=prompt, max_tokens=8, temperature=0, stop=[stop]
    ).choices[0]
    assert out.text == expected
    assert out.finish_reason == "stop"
    assert out.model_extra["stop_reason"] == stop


def test_usage_counts_prompt_and_completion_tokens(server: Server, client: openai.OpenAI) -> None:
    prompt = "Usage is counted in tokens, not in characters"
    n_prompt = requests.post(f"{server.url}/tokenize", json={"prompt": prompt}, timeout=30).json()[
        "count"
    ]
    out = client.completions.create(
        model="smollm2", prompt=prompt, max_tokens=5, extra_body={"ignore_eos": True}
    )
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (n_prompt, 5)
    assert out.usage.total_tokens == n_prompt + 5
    chunks = list(
        client.completions.create(
            model="smollm2",
            prompt=prompt,
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
    )
    usage = chunks[-1].usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
        n_prompt,
        5,
        n_prompt + 5,
    )


BAD_REQUESTS: list[tuple[str, str, Any, int, str, str | None]] = [
    # (id, route, body (bytes are sent raw), status, message fragment, param)
    ("malformed-json", "/v1/completions", b'{"prompt": "hi",', 400, "malformed JSON", None),
    ("not-an-object", "/v1/chat/completions", b"[1, 2]", 400, "JSON object", None),
    (
        "wrong-type",
        "/v1/completions",
        {"prompt": "hi", "temperature": "hot"},
        400,
        "temperature",
        "temperature",
    ),
    (
        "wrong-type-messages",
        "/v1/chat/completions",
        {"messages": "hello"},
        400,
        "messages",
        "messages",
    ),
    (
        "temperature<0",
        "/v1/completions",
        {"prompt": "hi", "temperature": -0.5},
        400,
        "temperature",
        "temperature",
    ),
    ("top_p>1", "/v1/chat/completions", {"messages": CHAT, "top_p": 1.5}, 400, "top_p", "top_p"),
    ("n<1", "/v1/completions", {"prompt": "hi", "n": 0}, 400, "n", "n"),
    (
        "max_tokens<1",
        "/v1/chat/completions",
        {"messages": CHAT, "max_tokens": 0},
        400,
        "max_tokens",
        "max_tokens",
    ),
    (
        "unknown-field",
        "/v1/completions",
        {"prompt": "hi", "temprature": 0},
        400,
        "temprature",
        "temprature",
    ),
    (
        "unknown-chat-field",
        "/v1/chat/completions",
        {"messages": CHAT, "max_tokns": 3},
        400,
        "max_tokns",
        "max_tokns",
    ),
    ("unknown-model", "/v1/completions", {"prompt": "hi", "model": "gpt-9"}, 404, "gpt-9", "model"),
    (
        "unknown-chat-model",
        "/v1/chat/completions",
        {"messages": CHAT, "model": "gpt-9"},
        404,
        "gpt-9",
        "model",
    ),
    ("unknown-route", "/v1/no-such-route", {"input": "hi"}, 404, "/v1/no-such-route", None),
]


@pytest.mark.parametrize(
    "route,body,status,fragment,param",
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_request_gets_an_openai_error_with_its_status(
    server: Server, route: str, body: Any, status: int, fragment: str, param: str | None
) -> None:
    if isinstance(body, bytes):
        resp = requests.post(
            f"{server.url}{route}",
            data=body,
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
    else:
        resp = requests.post(f"{server.url}{route}", json=body, timeout=30)
    err = assert_openai_error(resp, status, fragment)
    if param is not None:
        assert err["param"] == param


def test_unknown_get_route_is_a_404(server: Server) -> None:
    assert_openai_error(requests.get(f"{server.url}/v2/nothing", timeout=10), 404)


def test_openai_client_raises_typed_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="smollm2", messages=CHAT, temperature=-1)
    assert bad.value.status_code == 400
    assert "temperature" in bad.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such-model", prompt="hi")


def test_prompt_longer_than_the_context_is_a_400(server: Server, max_model_len: int) -> None:
    too_long = [1000] * (max_model_len + 1)
    resp = requests.post(
        f"{server.url}/v1/completions", json={"prompt": too_long, "max_tokens": 1}, timeout=60
    )
    assert_openai_error(
        resp,
        400,
        f"maximum context length is {max_model_len} tokens",
        f"{max_model_len + 1}",
    )
    # the same through chat: the rendered messages alone overflow the context
    words = " ".join(["hello"] * (max_model_len + 10))
    resp = requests.post(
        f"{server.url}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": words}]},
        timeout=60,
    )
    assert_openai_error(resp, 400, f"maximum context length is {max_model_len} tokens")


def test_prompt_plus_max_tokens_over_the_context_is_a_400(
    server: Server, max_model_len: int
) -> None:
    resp = requests.post(
        f"{server.url}/v1/completions",
        json={"prompt": [1000] * 10, "max_tokens": max_model_len},
        timeout=60,
    )
    assert_openai_error(resp, 400, f"maximum context length is {max_model_len} tokens")


def test_body_over_the_size_limit_is_a_413(server: Server) -> None:
    body = json.dumps({"prompt": "x" * (BODY_LIMIT + 10), "max_tokens": 1}).encode()
    resp = requests.post(
        f"{server.url}/v1/completions",
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    assert_openai_error(resp, 413, str(BODY_LIMIT))
    # ... and the server is fine afterwards
    assert requests.get(f"{server.url}/health", timeout=10).status_code == 200


def test_bad_requests_do_not_disturb_a_concurrent_good_stream(
    server: Server, client: openai.OpenAI, max_model_len: int
) -> None:
    prompt = "Here is a short story about a lighthouse keeper:"
    kwargs: dict[str, Any] = dict(model="smollm2", prompt=prompt, max_tokens=16, temperature=0)
    expected = client.completions.create(**kwargs).choices[0]
    stream = client.completions.create(**kwargs, stream=True)
    pieces: list[str] = []
    finish: list[str] = []
    fired_while_running = False
    for chunk in stream:
        pieces.append(chunk.choices[0].text)
        if chunk.choices[0].finish_reason:
            finish.append(chunk.choices[0].finish_reason)
        if len(pieces) == 2:
            for route, body, status, _fragment, _param in [case[1:] for case in BAD_REQUESTS]:
                kw: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body}
                assert requests.post(f"{server.url}{route}", timeout=30, **kw).status_code == status
            long_prompt = {"prompt": [1000] * (max_model_len + 1)}
            resp = requests.post(f"{server.url}/v1/completions", json=long_prompt, timeout=30)
            assert resp.status_code == 400
            fired_while_running = not finish
    assert fired_while_running, "the good request finished before the bad ones were sent"
    assert "".join(pieces) == expected.text
    assert finish == [expected.finish_reason]


def wait_until_idle(url: str, timeout: float = 15) -> dict[Any, float]:
    deadline = time.monotonic() + timeout
    while True:
        samples = metric_samples(url)
        idle = (
            sample(samples, "pagoda:num_requests_running") == 0
            and sample(samples, "pagoda:num_requests_waiting") == 0
            and sample(samples, "pagoda:kv_cache_usage_perc") == 0
        )
        if idle or time.monotonic() > deadline:
            return samples
        time.sleep(0.1)


@pytest.mark.parametrize("route", ["/v1/completions", "/v1/chat/completions"])
def test_client_disconnect_mid_stream_aborts_and_frees_kv(server: Server, route: str) -> None:
    body: dict[str, Any] = {"max_tokens": 2000, "ignore_eos": True, "stream": True}
    if route == "/v1/completions":
        body["prompt"] = "Once upon a time, in a land far away,"
    else:
        body["messages"] = CHAT
    resp = requests.post(f"{server.url}{route}", json=body, stream=True, timeout=60)
    assert resp.status_code == 200
    events = sse_events(resp)
    for _ in range(4):
        assert next(events) != "[DONE]"
    running = metric_samples(server.url)
    assert sample(running, "pagoda:num_requests_running") == 1
    assert sample(running, "pagoda:kv_cache_usage_perc") > 0
    resp.close()  # the client goes away with ~2000 tokens still to generate
    started = time.monotonic()
    samples = wait_until_idle(server.url, timeout=10)
    assert sample(samples, "pagoda:num_requests_running") == 0
    assert sample(samples, "pagoda:kv_cache_usage_perc") == 0
    assert time.monotonic() - started < 10


def test_32_concurrent_streams_all_complete_correctly(server: Server) -> None:
    prompts = [f"Fact number {i}: the number {i} is" for i in range(32)]
    n_tokens = 4

    async def run() -> tuple[list[str], list[tuple[str, str | None, int]]]:
        async with server.async_client() as aclient:

            async def full(prompt: str) -> str:
                out = await aclient.completions.create(
                    model="smollm2",
                    prompt=prompt,
                    max_tokens=n_tokens,
                    temperature=0,
                    extra_body={"ignore_eos": True},
                )
                return out.choices[0].text

            async def streamed(prompt: str) -> tuple[str, str | None, int]:
                stream = await aclient.completions.create(
                    model="smollm2",
                    prompt=prompt,
                    max_tokens=n_tokens,
                    temperature=0,
                    stream=True,
                    stream_options={"include_usage": True},
                    extra_body={"ignore_eos": True},
                )
                text, finish, tokens = "", None, -1
                async for chunk in stream:
                    if chunk.choices:
                        text += chunk.choices[0].text
                        finish = chunk.choices[0].finish_reason or finish
                    if chunk.usage is not None:
                        tokens = chunk.usage.completion_tokens
                return text, finish, tokens

            expected = await asyncio.gather(*(full(p) for p in prompts))
            got = await asyncio.gather(*(streamed(p) for p in prompts))
            return list(expected), list(got)

    expected, got = asyncio.run(run())
    assert [(finish, tokens) for _, finish, tokens in got] == [("length", n_tokens)] * 32
    # Both runs batch all 32 prompts; greedy text must agree prompt by prompt.
    assert [text for text, _, _ in got] == expected


REQUIRED_METRICS = {
    "pagoda:num_requests_running": "gauge",
    "pagoda:num_requests_waiting": "gauge",
    "pagoda:kv_cache_usage_perc": "gauge",
    "pagoda:prefix_cache_queries": "counter",
    "pagoda:prefix_cache_hits": "counter",
    "pagoda:prompt_tokens": "counter",
    "pagoda:generation_tokens": "counter",
    "pagoda:request_success": "counter",
    "pagoda:time_to_first_token_seconds": "histogram",
    "pagoda:time_per_output_token_seconds": "histogram",
    "pagoda:e2e_request_latency_seconds": "histogram",
    "pagoda:request_queue_time_seconds": "histogram",
}


def test_metrics_parse_and_count_a_request(server: Server, client: openai.OpenAI) -> None:
    before = metric_samples(server.url)
    prompt = "Metrics count every token: one two three"
    out = client.completions.create(
        model="smollm2", prompt=prompt, max_tokens=4, extra_body={"ignore_eos": True}
    )
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    for name, kind in REQUIRED_METRICS.items():
        assert families.get(name) == kind, (name, families.get(name))
    after = metric_samples(server.url)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("pagoda:prompt_tokens_total") == out.usage.prompt_tokens
    assert delta("pagoda:generation_tokens_total") == 4
    assert delta("pagoda:request_success_total", finished_reason="length") == 1
    assert delta("pagoda:prefix_cache_queries_total") >= out.usage.prompt_tokens
    for hist in ("time_to_first_token", "e2e_request_latency", "request_queue_time"):
        assert delta(f"pagoda:{hist}_seconds_count") == 1, hist
    assert delta("pagoda:time_per_output_token_seconds_count") == 1
    assert sample(after, "pagoda:e2e_request_latency_seconds_sum") > 0


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


JSON_TYPES = {"object", "array", "string", "number", "integer", "boolean", "null"}


def _check_schema_shape(node: Any, where: str) -> None:
    """Structural JSON Schema checks: known types, well-formed combinators and properties."""
    assert isinstance(node, dict), where
    if "type" in node:
        types = node["type"] if isinstance(node["type"], list) else [node["type"]]
        assert set(types) <= JSON_TYPES, (where, types)
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        if key in node:
            assert isinstance(node[key], list) and node[key], (where, key)
            for i, sub in enumerate(node[key]):
                _check_schema_shape(sub, f"{where}.{key}[{i}]")
    for key in ("items", "additionalProperties", "not"):
        if isinstance(node.get(key), dict):
            _check_schema_shape(node[key], f"{where}.{key}")
    if "properties" in node:
        assert isinstance(node["properties"], dict), where
        for name, sub in node["properties"].items():
            _check_schema_shape(sub, f"{where}.properties.{name}")
    if "required" in node:
        assert set(node["required"]) <= set(node.get("properties", {})), where


def test_openapi_document_is_valid(server: Server) -> None:
    doc = requests.get(f"{server.url}/openapi.json", timeout=10).json()
    assert doc["openapi"].startswith("3.")
    assert doc["info"]["title"] and doc["info"]["version"]
    schemas = doc["components"]["schemas"]
    for path in ("/v1/completions", "/v1/chat/completions", "/tokenize", "/detokenize"):
        op = doc["paths"][path]["post"]
        body_schema = op["requestBody"]["content"]["application/json"]["schema"]
        assert list(_refs(body_schema)), path
        assert "200" in op["responses"]
    for path in ("/v1/models", "/health", "/metrics", "/version"):
        assert "get" in doc["paths"][path]
    for ref in _refs(doc):
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.removeprefix("#/components/schemas/") in schemas, ref
    assert {"CompletionRequest", "ChatCompletionRequest", "ErrorResponse"} <= set(schemas)
    for name, schema in schemas.items():
        _check_schema_shape(schema, name)
    chat = schemas["ChatCompletionRequest"]
    assert "messages" in chat["required"]
    assert chat.get("additionalProperties") is False  # unknown fields are rejected


def test_openapi_component_schemas_pass_the_json_schema_metaschema(server: Server) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    doc = requests.get(f"{server.url}/openapi.json", timeout=10).json()
    for schema in doc["components"]["schemas"].values():
        jsonschema.validators.Draft202012Validator.check_schema(schema)


def test_tokenize_and_detokenize_round_trip(server: Server, client: openai.OpenAI) -> None:
    text = "Pagoda tokenizes: héllo wörld, 12345!"
    tok = requests.post(
        f"{server.url}/tokenize", json={"prompt": text, "return_token_strs": True}, timeout=30
    ).json()
    assert tok["count"] == len(tok["tokens"]) == len(tok["token_strs"]) > 0
    assert tok["max_model_len"] > 0
    back = requests.post(f"{server.url}/detokenize", json={"tokens": tok["tokens"]}, timeout=30)
    assert back.json() == {"prompt": text}

    messages = [{"role": "user", "content": "What is a pagoda?"}]
    chat_tok = requests.post(
        f"{server.url}/tokenize", json={"messages": messages}, timeout=30
    ).json()
    rendered = requests.post(
        f"{server.url}/detokenize", json={"tokens": chat_tok["tokens"]}, timeout=30
    ).json()["prompt"]
    assert "What is a pagoda?" in rendered
    # the chat endpoint sees exactly the tokens /tokenize reports
    out = client.chat.completions.create(model="smollm2", messages=messages, max_tokens=1)
    assert out.usage.prompt_tokens == chat_tok["count"]
    bad = requests.post(f"{server.url}/detokenize", json={"tokens": [10**9]}, timeout=30)
    assert_openai_error(bad, 400, "vocabulary")


def test_each_request_is_logged_when_received_and_finished(
    server: Server, client: openai.OpenAI
) -> None:
    prompt = "LOGGED-PROMPT with a tail that is cut from the log"
    out = client.completions.create(model="smollm2", prompt=prompt, max_tokens=2, temperature=0)
    rid = out.id
    deadline = time.monotonic() + 10
    while f"Finished request {rid}" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = [line for line in server.log().splitlines() if rid in line]
    received = [line for line in lines if "Received request" in line]
    finished = [line for line in lines if "Finished request" in line]
    assert len(received) == 1 and len(finished) == 1, lines
    assert repr(prompt[:MAX_LOG_LEN]) in received[0]
    assert prompt[: MAX_LOG_LEN + 1] not in received[0]
    assert f"prompt_len: {out.usage.prompt_tokens}" in received[0]
    assert "max_tokens=2" in received[0] and "temperature=0.0" in received[0]
    assert out.choices[0].finish_reason in finished[0]


def test_without_an_api_key_v1_routes_need_no_authorization(server: Server) -> None:
    resp = requests.post(
        f"{server.url}/v1/completions", json={"prompt": "hi", "max_tokens": 1}, timeout=60
    )
    assert resp.status_code == 200, resp.text
    assert requests.get(f"{server.url}/v1/models", timeout=10).status_code == 200
