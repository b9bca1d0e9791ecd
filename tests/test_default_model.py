"""The real default model (SmolLM2-135M-Instruct, Q4_1 GGUF dequantized to float32) against
transformers loaded from the same GGUF file: identical greedy chat answers, where a difference
is allowed only at a true near-tie."""

from pathlib import Path

import pytest
import torch
import transformers

from pagoda import LLM, SamplingParams
from pagoda.config import resolve_model_path

MAX_TOKENS = 48
TOP = 5
TOL = 1e-3

QUESTIONS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain in two sentences why the sky is blue.",
    "List three prime numbers greater than ten.",
    "How do I reverse a list in Python?",
    "Who wrote Romeo and Juliet?",
    "Give me a tip for sleeping better.",
    "Translate 'good morning' into Spanish.",
]


@pytest.fixture(scope="module")
def gguf_path() -> Path:
    return Path(resolve_model_path("smollm2"))


@pytest.fixture(scope="module")
def llm() -> LLM:
    return LLM(dtype="float32", kv_cache_memory=128 << 20)


@pytest.fixture(scope="module")
def hf_model(gguf_path: Path):
    return transformers.AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    ).eval()


@pytest.fixture(scope="module")
def hf_tokenizer(gguf_path: Path):
    return transformers.AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)


@pytest.fixture(scope="module")
def answers(llm: LLM):
    conversations = [[{"role": "user", "content": q}] for q in QUESTIONS]
    params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, logprobs=TOP)
    return llm.chat(conversations, params, use_tqdm=False)


def test_chat_prompts_are_transformers_chat_template_tokens(answers, hf_tokenizer) -> None:
    """``LLM.chat`` feeds the model exactly the tokens of transformers' chat template (with the
    generation prompt) for the tokenizer stored in the GGUF file."""
    for question, output in zip(QUESTIONS, answers, strict=True):
        text = hf_tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
        assert text.rstrip().endswith("assistant")
        assert output.prompt_token_ids == hf_tokenizer.encode(text, add_special_tokens=False)


def test_greedy_chat_answers_match_transformers(answers, hf_model, llm: LLM) -> None:
    """Greedy answers to 8 chat prompts equal transformers' token for token (stopping at EOS on
    both sides). Teacher forcing: transformers scores pagoda's answer in one pass; each pagoda
    token must be transformers' argmax given the same prefix (so transformers' greedy generate
    gives the same answer), and every position's top-5 logprobs agree within 1e-3. A different
    token is accepted only at a true near-tie: transformers' two candidates' logits within 1e-3
    (the margin is printed); positions after it are not compared."""
    eos = set(llm.llm_engine.eos_token_ids)
    ties = 0
    for question, output in zip(QUESTIONS, answers, strict=True):
        prompt_ids = output.prompt_token_ids
        got = output.outputs[0]
        tokens = list(got.token_ids)
        assert 0 < len(tokens) <= MAX_TOKENS
        assert len(got.logprobs) == len(tokens)
        # Stopped early only at EOS; that EOS is compared below like any token, so transformers
        # would have stopped there too.
        if len(tokens) < MAX_TOKENS:
            assert tokens[-1] in eos and got.finish_reason == "stop"
        with torch.no_grad():
            ids = torch.tensor([prompt_ids + tokens])
            logits = hf_model(ids).logits[0, len(prompt_ids) - 1 : -1].float()
        ref_logprobs = torch.log_softmax(logits, dim=-1)
        for pos, (token, position) in enumerate(zip(tokens, got.logprobs, strict=True)):
            ref_token = int(logits[pos].argmax())
            if token != ref_token:
                margin = (logits[pos, ref_token] - logits[pos, token]).item()
                print(
                    f"{question!r}: first difference at token {pos}: pagoda {token}, "
                    f"transformers {ref_token}, logit margin {margin:.2e}"
                )
                assert margin < TOL, f"{question!r}: not a near-tie at token {pos}: {margin}"
                assert ref_token in position, "transformers' choice missing from pagoda's top-5"
                pagoda_margin = position[token].logprob - position[ref_token].logprob
                assert 0 <= pagoda_margin < TOL
                ties += 1
                break
            ref_top = torch.topk(ref_logprobs[pos], TOP).indices.tolist()
            assert set(position) == set(ref_top), (question, pos)
            for token_id, lp in position.items():
                assert abs(lp.logprob - ref_logprobs[pos, token_id].item()) < TOL, (question, pos)
    assert ties <= 2, f"{ties} of {len(QUESTIONS)} answers diverge: too many for near-ties"
