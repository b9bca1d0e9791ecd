"""The pooling endpoints through real HTTP: `pagoda serve` subprocesses (the MiniLM embedder,
a tiny BERT cross-encoder), the `openai` client for embeddings, raw HTTP for the rest."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openai
import pytest
import requests
import torch
from pooling_models import make_tiny_bert_classifier, minilm_dir
from test_server import Server, assert_openai_error, running_server, start_server, stop_server

DOCS = ["The cat sits on the mat.", "Stock markets fell sharply.", "A cat rests on a rug."]


@pytest.fixture(scope="module")
def embed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("embed") / "server.log"
    with running_server([str(minilm_dir()), "--served-model-name", "minilm"], log) as server:
        yield server


@pytest.fixture(scope="module")
def score_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("ce")
    path = make_tiny_bert_classifier(root / "model", num_labels=1, seed=3)
    with running_server([str(path), "--task", "score"], root / "server.log") as server:
        yield server


def test_openai_client_embeddings(embed_server: Server) -> None:
    client = embed_server.client()
    resp = client.embeddings.create(model="minilm", input=DOCS)  # base64 on the wire
    assert [d.index for d in resp.data] == [0, 1, 2]
    vecs = np.array([d.embedding for d in resp.data])
    assert vecs.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert resp.usage.prompt_tokens == resp.usage.total_tokens > 0
    floats = client.embeddings.create(model="minilm", input=DOCS[0], encoding_format="float")
    assert np.allclose(floats.data[0].embedding, vecs[0], atol=1e-6)
    ids = client.embeddings.create(model="minilm", input=[101, 7592, 102])
    assert len(ids.data[0].embedding) == 384
    with pytest.raises(openai.BadRequestError, match="matryoshka"):
        client.embeddings.create(model="minilm", input="hi", dimensions=8)


def test_embedding_errors(embed_server: Server) -> None:
    url = f"{embed_server.url}/v1/embeddings"
    assert_openai_error(requests.post(url, json={"input": ""}), 400, "empty")
    assert_openai_error(requests.post(url, json={"input": []}), 400, "empty")
    too_long = requests.post(url, json={"input": "word " * 400})
    assert_openai_error(too_long, 400, "maximum context length is 256")
    ok = requests.post(url, json={"input": "word " * 400, "truncate_prompt_tokens": 256})
    assert ok.status_code == 200 and ok.json()["usage"]["prompt_tokens"] == 256
    wrong = requests.post(f"{embed_server.url}/classify", json={"input": "hi"})
    assert_openai_error(wrong, 400, "--task classify")
    completion = requests.post(f"{embed_server.url}/v1/completions", json={"prompt": "hi"})
    assert_openai_error(completion, 400, "--task generate")


def test_pooling_score_and_rerank_on_embedder(embed_server: Server) -> None:
    pooled = requests.post(f"{embed_server.url}/pooling", json={"input": DOCS[:2]}).json()
    assert pooled["object"] == "list" and len(pooled["data"][1]["data"]) == 384
    b64 = requests.post(
        f"{embed_server.url}/pooling", json={"input": DOCS[0], "encoding_format": "base64"}
    ).json()
    decoded = np.frombuffer(base64.b64decode(b64["data"][0]["data"]), dtype="<f4")
    assert np.allclose(decoded, pooled["data"][0]["data"], atol=1e-6)
    score = requests.post(
        f"{embed_server.url}/v1/score", json={"text_1": "A cat on a mat", "text_2": DOCS}
    ).json()
    scores = [d["score"] for d in score["data"]]
    rerank = requests.post(
        f"{embed_server.url}/rerank", json={"query": "A cat on a mat", "documents": DOCS}
    ).json()
    assert [r["index"] for r in rerank["results"]] == sorted(range(3), key=lambda i: -scores[i])


def test_cross_encoder_endpoints_match_transformers(score_server: Server, tmp_path: Path) -> None:
    import transformers

    url = score_server.url
    query = "what is the capital of france"
    docs = [
        "Paris is the capital of France.",
        "Bananas are yellow.",
        "France is in Europe.",
        "The cat sits on the mat.",
    ]
    path = Path(requests.get(f"{url}/v1/models").json()["data"][0]["id"])
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.BertForSequenceClassification.from_pretrained(path).eval()
    with torch.no_grad():
        ref = [
            model(**tok(query, d, return_tensors="pt")).logits[0, 0].sigmoid().item() for d in docs
        ]
    expected = sorted(range(len(docs)), key=lambda i: -ref[i])
    for route in ("/rerank", "/v1/rerank", "/v2/rerank"):
        body = requests.post(
            f"{url}{route}", json={"query": query, "documents": docs, "top_n": 3}
        ).json()
        assert [r["index"] for r in body["results"]] == expected[:3], route
        assert body["results"][0]["document"]["text"] == docs[expected[0]]
        assert body["results"][0]["relevance_score"] == pytest.approx(ref[expected[0]], abs=1e-5)
    for route in ("/score", "/v1/score"):
        body = requests.post(f"{url}{route}", json={"text_1": query, "text_2": docs}).json()
        assert [d["score"] for d in body["data"]] == pytest.approx(ref, abs=1e-5)
    mismatch = requests.post(f"{url}/score", json={"text_1": ["a", "b"], "text_2": docs})
    assert_openai_error(mismatch, 400, "text_1")
    assert_openai_error(
        requests.post(f"{url}/rerank", json={"query": "q", "documents": []}), 400, "empty"
    )
    wrong = requests.post(f"{url}/v1/embeddings", json={"input": "hi"})
    assert_openai_error(wrong, 400, "--task embed")


def test_classify_endpoint(tmp_path: Path) -> None:
    path = make_tiny_bert_classifier(tmp_path / "cls", num_labels=3)
    server = start_server([str(path)], tmp_path / "server.log")
    try:
        body = requests.post(f"{server.url}/classify", json={"input": ["hello", "world"]}).json()
        assert [d["index"] for d in body["data"]] == [0, 1]
        first = body["data"][0]
        assert first["num_classes"] == 3 and sum(first["probs"]) == pytest.approx(1, abs=1e-5)
        assert first["label"] == f"LABEL_{int(np.argmax(first['probs']))}"
        wrong = requests.post(f"{server.url}/rerank", json={"query": "q", "documents": ["d"]})
        assert_openai_error(wrong, 400, "--task score")
    finally:
        stop_server(server)
