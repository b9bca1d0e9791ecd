"""`pagoda serve` options that need their own server: API keys (flag and PAGODA_API_KEY) and
SIGTERM. A tiny random Llama with the default model's tokenizer keeps these servers cheap."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import requests
from test_server import (
    Server,
    assert_openai_error,
    running_server,
    sse_events,
    start_server,
    stop_server,
)
from tiny_models import make_tiny_checkpoint

KEY = "sk-test-flag-key"
ENV_KEY = "sk-test-env-key"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Path:
    return make_tiny_checkpoint(
        "LlamaForCausalLM", tmp_path_factory.mktemp("tiny-serve"), tokenizer_dir
    )


def tiny_args(model: Path, *extra: str) -> list[str]:
    return [
        str(model),
        "--served-model-name",
        "tiny",
        "--max-model-len",
        "512",
        "--kv-cache-memory",
        str(16 << 20),
        *extra,
    ]


@pytest.fixture(scope="module")
def keyed_server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("keyed") / "server.log"
    args = tiny_args(tiny_model, "--api-key", KEY)
    with running_server(args, log, env={"PAGODA_API_KEY": ""}) as srv:
        yield srv


@pytest.fixture(scope="module")
def env_keyed_server(
    tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("env-keyed") / "server.log"
    with running_server(tiny_args(tiny_model), log, env={"PAGODA_API_KEY": ENV_KEY}) as srv:
        yield srv


V1_ROUTES = [
    ("get", "/v1/models", None),
    ("post", "/v1/completions", {"prompt": "hi", "max_tokens": 1}),
    ("post", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
]


@pytest.mark.parametrize("method,route,body", V1_ROUTES, ids=[r[1] for r in V1_ROUTES])
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}],
    ids=["missing", "wrong", "no-bearer"],
)
def test_api_key_is_required_on_v1_routes(
    keyed_server: Server, method: str, route: str, body: dict | None, headers: dict
) -> None:
    resp = requests.request(
        method, f"{keyed_server.url}{route}", json=body, headers=headers, timeout=30
    )
    assert_openai_error(resp, 401, "API key")


def test_health_and_metrics_stay_open_with_an_api_key(keyed_server: Server) -> None:
    assert requests.get(f"{keyed_server.url}/health", timeout=10).status_code == 200
    assert requests.get(f"{keyed_server.url}/metrics", timeout=10).status_code == 200


def test_the_right_api_key_is_accepted_by_the_openai_client(keyed_server: Server) -> None:
    with pytest.raises(openai.AuthenticationError) as err:
        keyed_server.client(api_key="wrong").models.list()
    assert err.value.status_code == 401
    client = keyed_server.client(api_key=KEY)
    assert [m.id for m in client.models.list().data] == ["tiny"]
    out = client.completions.create(
        model="tiny", prompt="hello", max_tokens=3, extra_body={"ignore_eos": True}
    )
    assert out.usage.completion_tokens == 3


def test_pagoda_api_key_env_is_the_same_as_the_flag(env_keyed_server: Server) -> None:
    url = env_keyed_server.url
    assert_openai_error(requests.get(f"{url}/v1/models", timeout=10), 401, "API key")
    wrong = {"Authorization": f"Bearer {KEY}"}
    assert_openai_error(requests.get(f"{url}/v1/models", headers=wrong, timeout=10), 401)
    right = {"Authorization": f"Bearer {ENV_KEY}"}
    assert requests.get(f"{url}/v1/models", headers=right, timeout=10).status_code == 200
    assert requests.get(f"{url}/health", timeout=10).status_code == 200


def test_sigterm_with_a_request_in_flight_exits_0(tiny_model: Path, tmp_path: Path) -> None:
    server = start_server(tiny_args(tiny_model), tmp_path / "server.log")
    try:
        resp = requests.post(
            f"{server.url}/v1/completions",
            json={"prompt": "hi", "max_tokens": 60, "ignore_eos": True, "stream": True},
            stream=True,
            timeout=60,
        )
        assert resp.status_code == 200
        events = sse_events(resp)
        received = [next(events) for _ in range(3)]
        server.proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        try:
            received += list(events)
            cut_off = False
        except requests.exceptions.ChunkedEncodingError:
            cut_off = True
        status = server.proc.wait(timeout=60)
        assert status == 0, server.log()
        assert time.monotonic() - sent < 45
        # The request either finished properly or its stream was closed: never a hang.
        if not cut_off:
            assert received[-1] == "[DONE]", received[-3:]
            assert json.loads(received[-2])["choices"][0]["finish_reason"] == "length"
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{server.url}/health", timeout=5)
    finally:
        stop_server(server)
