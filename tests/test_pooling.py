"""Pooling models offline (``LLM.embed / classify / score / reward / encode``) against
transformers, plus task resolution and how the engine schedules pooling requests."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pooling_models import make_tiny_bert_classifier, make_tiny_qwen2_classifier, minilm_dir

from pagoda import LLM, PoolingParams
from pagoda.config import EngineConfig
from pagoda.pooling_params import PoolerConfig
from pagoda.tasks import resolve_task, sentence_transformers_pooling, supported_tasks

SENTENCES = [
    "The cat sits on the mat.",
    "A man is playing a guitar on stage.",
    "Stock markets fell sharply after the announcement.",
    "How do I bake sourdough bread at home?",
    "The quick brown fox jumps over the lazy dog.",
    "Quantum computers use qubits instead of bits.",
    "She walked to the store to buy some milk and eggs.",
    "Paris is the capital of France.",
    "The weather today is sunny with a light breeze.",
    "Neural networks learn representations from data.",
    "He forgot his umbrella and got soaked in the rain.",
    "The museum opens at nine in the morning.",
    "A child is reading a book under a tree.",
    "Electric cars are becoming more affordable every year.",
    "The orchestra played Beethoven's ninth symphony.",
    "Please restart the server before running the tests.",
    "Mount Everest is the highest mountain above sea level.",
    "I prefer tea over coffee in the evening.",
    "The committee postponed its decision until next week.",
    "Birds migrate south when the temperatures drop.",
    "This restaurant serves the best noodles in town.",
    "The library has a large collection of rare manuscripts.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "Our flight was delayed by three hours because of fog.",
    "The algorithm sorts the list in logarithmic time per insertion.",
    "A dog is running happily across the green field.",
    "Solar panels convert sunlight directly into electricity.",
    "The novel tells the story of two families over a century.",
    "Remember to water the plants while I'm away.",
    "The team celebrated their victory late into the night.",
    "Vaccines train the immune system to recognise pathogens.",
    "hi",
]


@pytest.fixture(scope="module")
def minilm() -> LLM:
    return LLM(str(minilm_dir()))


def _st_reference(texts: list[str]) -> torch.Tensor:
    """Sentence-Transformers' recipe with plain transformers: mean pooling + normalize."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_dir())
    model = AutoModel.from_pretrained(minilm_dir()).eval()
    enc = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    return F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)


def test_minilm_embeddings_match_transformers_mean_pooling(minilm: LLM) -> None:
    config = minilm.llm_engine.config.model
    assert config.task == "embed"  # BertModel: embed is its first task
    assert config.pooler == PoolerConfig(pooling_type="MEAN", normalize=True)
    assert config.max_model_len == 256  # sentence_bert_config.json's max_seq_length
    outputs = minilm.embed(SENTENCES, use_tqdm=False)
    ours = torch.tensor([o.outputs.embedding for o in outputs])
    assert ours.shape == (32, 384)
    cos = F.cosine_similarity(ours, _st_reference(SENTENCES), dim=-1)
    assert cos.min().item() >= 0.9999, cos


def test_minilm_bfloat16_matches_transformers_in_callers_order() -> None:
    # bf16 on the CPU pads the step's rows to a bucket size; prompts go in longest-first.
    llm = LLM(str(minilm_dir()), dtype="bfloat16")
    outputs = llm.embed(SENTENCES, use_tqdm=False)
    ours = torch.stack([o.outputs.data for o in outputs])
    cos = F.cosine_similarity(ours, _st_reference(SENTENCES), dim=-1)
    assert cos.min().item() >= 0.999, cos
    assert [o.prompt for o in outputs] == SENTENCES


def test_embed_params_and_truncation(minilm: LLM) -> None:
    raw = minilm.embed(
        ["Paris is the capital of France."], PoolingParams(normalize=False), use_tqdm=False
    )[0]
    assert torch.linalg.norm(raw.outputs.data).item() > 1.5
    long_text = "word " * 400
    with pytest.raises(ValueError, match="maximum context length is 256"):
        minilm.embed([long_text], use_tqdm=False)
    cut = minilm.embed([long_text], use_tqdm=False, truncate_prompt_tokens=-1)[0]
    assert len(cut.prompt_token_ids) == 256
    with pytest.raises(ValueError, match="empty"):
        minilm.embed([""], use_tqdm=False)
    with pytest.raises(ValueError, match="start it with --task classify"):
        minilm.classify(["hello"], use_tqdm=False)
    with pytest.raises(ValueError, match="start it with --task generate"):
        minilm.generate(["hello"], use_tqdm=False)


def test_pooling_requests_keep_no_kv_blocks(minilm: LLM) -> None:
    engine = minilm.llm_engine
    minilm.embed(SENTENCES[:8], use_tqdm=False)
    assert not engine.scheduler.running and not engine.scheduler.waiting
    assert engine.scheduler.kv.num_free_blocks == engine.executor.num_blocks
    assert not engine.parents and not engine.requests


def test_default_batched_tokens_depend_on_the_task() -> None:
    """Pooling steps have no decodes to keep short: they default to 4096 tokens, generation
    to 2048; an explicit value wins."""

    def budget(**kwargs: object) -> int | None:
        return EngineConfig.from_kwargs(**kwargs).finalize().scheduler.max_num_batched_tokens

    assert budget(model=str(minilm_dir())) == 4096
    assert budget(model=str(minilm_dir()), max_num_batched_tokens=1024) == 1024
    assert budget() == 2048


def test_pooling_prompts_are_batched_and_never_split(tmp_path: Path) -> None:
    llm = LLM(str(minilm_dir()), max_num_batched_tokens=64)
    # Raised so a whole prompt always fits one step (pooling prompts are never chunked).
    assert llm.llm_engine.config.scheduler.max_num_batched_tokens == 256
    engine = llm.llm_engine
    steps = []
    original = engine.executor.launch_model

    def spy(sched):  # type: ignore[no-untyped-def]
        for s in sched.scheduled:
            assert s.num_new_tokens == s.request.num_prompt_tokens
            assert s.request.num_computed_tokens == 0
        steps.append(len(sched.scheduled))
        return original(sched)

    engine.executor.launch_model = spy
    texts = ["word " * 100] * 3 + ["short one"] * 5
    out = llm.embed(texts, use_tqdm=False)
    assert len(out) == 8 and max(steps) > 1  # several requests share a step
    assert sum(steps) == 8
    # Equal prompts give equal embeddings whatever their batch-mates.
    assert torch.allclose(out[0].outputs.data, out[2].outputs.data, atol=1e-5)


def test_score_with_embedding_model_is_cosine(minilm: LLM) -> None:
    query = "A cat sits on a mat."
    docs = ["The cat sits on the mat.", "Stock markets fell sharply.", "A cat rests on a rug."]
    scores = [o.outputs.score for o in minilm.score(query, docs, use_tqdm=False)]
    ref = _st_reference([query, *docs])
    expected = (ref[1:] @ ref[0]).tolist()
    assert scores == pytest.approx(expected, abs=1e-4)


@pytest.fixture(scope="module")
def bert_cls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert_classifier(tmp_path_factory.mktemp("bert_cls"))


def _hf_logits(path: Path, cls_name: str, texts: list, pair: bool = False) -> torch.Tensor:
    import transformers
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = getattr(transformers, cls_name).from_pretrained(path).eval()
    rows = []
    with torch.no_grad():
        for t in texts:
            enc = tok(*t, return_tensors="pt") if pair else tok(t, return_tensors="pt")
            rows.append(model(**enc).logits[0])
    return torch.stack(rows)


def test_tiny_bert_classifier_matches_transformers(bert_cls_dir: Path) -> None:
    llm = LLM(str(bert_cls_dir))
    assert llm.llm_engine.config.model.task == "classify"
    texts = SENTENCES[:6]
    ref = _hf_logits(bert_cls_dir, "BertForSequenceClassification", texts)
    probs = torch.tensor([o.outputs.probs for o in llm.classify(texts, use_tqdm=False)])
    assert torch.allclose(probs, ref.softmax(-1), atol=1e-5)
    raw = llm.classify(texts, PoolingParams(activation=False), use_tqdm=False)
    assert torch.allclose(torch.stack([o.outputs.data for o in raw]), ref, atol=1e-4)


def test_bert_cross_encoder_rerank_order_matches_transformers(tmp_path: Path) -> None:
    path = make_tiny_bert_classifier(tmp_path / "ce", num_labels=1, seed=3)
    llm = LLM(str(path), task="score")
    query = "what is the capital of france"
    docs = SENTENCES[4:14]
    scores = [o.outputs.score for o in llm.score(query, docs, use_tqdm=False)]
    ref = _hf_logits(path, "BertForSequenceClassification", [(query, d) for d in docs], pair=True)
    assert scores == pytest.approx(ref[:, 0].sigmoid().tolist(), abs=1e-5)
    ours = sorted(range(len(docs)), key=lambda i: -scores[i])
    theirs = sorted(range(len(docs)), key=lambda i: -ref[i, 0].item())
    assert ours == theirs


def test_tiny_qwen2_classifier_and_reward_match_transformers(
    tmp_path: Path, tokenizer_dir: Path
) -> None:
    path = make_tiny_qwen2_classifier(tmp_path / "qwen2", tokenizer_dir)
    texts = SENTENCES[:5]
    ref = _hf_logits(path, "Qwen2ForSequenceClassification", texts)
    llm = LLM(str(path))
    probs = torch.tensor([o.outputs.probs for o in llm.classify(texts, use_tqdm=False)])
    assert torch.allclose(probs, ref.softmax(-1), atol=1e-4)
    llm.llm_engine.executor.runner.release()
    reward = LLM(str(path), task="reward")
    raw = torch.stack([o.outputs.data for o in reward.reward(texts, use_tqdm=False)])
    assert torch.allclose(raw, ref, atol=1e-3)


def test_causal_lm_converted_to_embedder_pools_last_token(
    tmp_path: Path, tokenizer_dir: Path
) -> None:
    from tiny_models import make_tiny_checkpoint
    from transformers import AutoModel, AutoTokenizer

    path = make_tiny_checkpoint("Qwen2ForCausalLM", tmp_path / "q", tokenizer_dir)
    llm = LLM(str(path), runner="pooling", convert="embed")
    assert llm.llm_engine.config.model.task == "embed"
    texts = SENTENCES[:3]
    ours = torch.stack([o.outputs.data for o in llm.embed(texts, use_tqdm=False)])
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    with torch.no_grad():
        ref = torch.stack(
            [model(**tok(t, return_tensors="pt")).last_hidden_state[0, -1] for t in texts]
        )
    assert torch.allclose(ours, F.normalize(ref, dim=-1), atol=1e-4)


def test_supported_tasks_and_multi_task_log(caplog: pytest.LogCaptureFixture) -> None:
    assert supported_tasks(["BertModel"]) == ("embed", "score")
    assert supported_tasks(["Qwen2ForSequenceClassification"]) == ("classify", "score", "reward")
    causal = supported_tasks(["LlamaForCausalLM"])
    with caplog.at_level(logging.INFO, logger="pagoda"):
        assert resolve_task("auto", "auto", "auto", causal) == "generate"
    assert (
        "This model supports multiple tasks: {'generate', 'embed', 'classify', 'score', "
        "'reward'}. Defaulting to 'generate'." in caplog.text
    )
    assert resolve_task("auto", "pooling", "auto", causal) == "embed"
    assert resolve_task("auto", "pooling", "reward", causal) == "reward"
    assert resolve_task("auto", "auto", "classify", causal) == "classify"
    assert resolve_task("auto", "pooling", "auto", ("classify", "score")) == "classify"
    with pytest.raises(ValueError, match="does not support the 'generate' task"):
        resolve_task("generate", "auto", "auto", ("embed", "score"))


def test_sentence_transformers_config_and_overrides(tmp_path: Path) -> None:
    assert sentence_transformers_pooling(str(minilm_dir())) == PoolerConfig("MEAN", True)
    assert sentence_transformers_pooling(str(tmp_path)) is None
    base = PoolerConfig("MEAN", True)
    merged = base.merged(PoolerConfig.parse('{"pooling_type": "cls", "normalize": false}'))
    assert merged == PoolerConfig("CLS", False)
    with pytest.raises(ValueError, match="pooling_type"):
        PoolerConfig.parse({"pooling_type": "MAX"})
    with pytest.raises(ValueError, match="unknown pooler config keys"):
        PoolerConfig.parse({"pool": "CLS"})


def test_override_pooler_config_changes_pooling() -> None:
    llm = LLM(str(minilm_dir()), override_pooler_config={"pooling_type": "CLS"})
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_dir())
    model = AutoModel.from_pretrained(minilm_dir()).eval()
    with torch.no_grad():
        cls = model(**tok("Paris is nice.", return_tensors="pt")).last_hidden_state[0, 0]
    ours = llm.embed("Paris is nice.", use_tqdm=False)[0].outputs.data
    assert torch.allclose(ours, F.normalize(cls, dim=0), atol=1e-4)
