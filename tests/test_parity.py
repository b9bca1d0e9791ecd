"""Parity of the Llama-family model plugins with transformers on tiny random-weight models:
same greedy tokens, top-5 logprobs within 1e-3 (float32), through pagoda's paged KV cache with
prefix caching shared between prompts."""

import shutil
from pathlib import Path

import pytest
import torch
import transformers
from tiny_models import ARCHITECTURES, make_tiny_checkpoint

from pagoda import LLM, SamplingParams

NEW_TOKENS = 32
TOP = 5
TOL = 1e-3
BLOCK = 16
KV_BYTES = 16 << 20  # plenty for 4 sequences; the CPU default pool is far larger and slow to fill

SHARED = (
    "The history of the lighthouse keepers on the northern coast is long and strange, full of "
    "storms, shipwrecks, quiet winters and letters that never arrived at their destination, "
    "written by hand in the long evenings"
)
SHORT = ["Hello", "The capital of France is", "1, 2, 3, 4,", "def fibonacci(n):"]
# Order matters: with max_num_seqs=4 the second wave reuses the cached blocks of the first.
PROMPTS = [
    SHARED + ". In the first year",
    SHORT[0],
    SHORT[1],
    "Once upon a time, in a small village by the sea, there lived an old fisherman who",
    SHARED + ", and so",
    SHARED + ". Nobody remembers why the keepers of the lighthouse stopped writing home",
    SHARED + ":",
    SHORT[2],
    SHORT[3],
]


def hf_logprobs(model, prompt_ids: list[int], new_ids: list[int]) -> torch.Tensor:
    """log_softmax of transformers' logits after the prompt and after each of ``new_ids``
    but the last, for one unpadded sequence: the distributions of positions 0..len(new_ids)-1.

    Greedy parity is checked by teacher forcing: if every pagoda token is transformers' argmax
    given the same prefix, transformers' greedy ``generate`` yields the same tokens (by
    induction), at one forward pass per prompt instead of 32."""
    ids = torch.tensor([prompt_ids + new_ids[:-1]])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt_ids) - 1 :]
    return torch.log_softmax(logits.float(), dim=-1)


def assert_parity(checkpoint: Path, prompts: list[str] = PROMPTS) -> None:
    llm = LLM(
        str(checkpoint), dtype="float32", max_num_seqs=4, block_size=BLOCK, kv_cache_memory=KV_BYTES
    )
    tokenizer = llm.get_tokenizer()
    params = SamplingParams(temperature=0, max_tokens=NEW_TOKENS, ignore_eos=True, logprobs=TOP)
    outputs = llm.generate(prompts, params, use_tqdm=False)

    # The shared prefix spans several full blocks, and the second wave of prompts found them.
    assert len(tokenizer.encode(SHARED)) > 2 * BLOCK
    assert llm.llm_engine.scheduler.kv.stats.hits >= 2 * BLOCK

    hf = transformers.AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    for prompt, output in zip(prompts, outputs, strict=True):
        ids = output.prompt_token_ids
        assert ids == tokenizer.encode(prompt)
        got = output.outputs[0]
        assert len(got.token_ids) == NEW_TOKENS
        ref_logprobs = hf_logprobs(hf, ids, list(got.token_ids))
        ref_tokens = ref_logprobs.argmax(dim=-1).tolist()
        assert list(got.token_ids) == ref_tokens, f"greedy tokens differ for {prompt!r}"
        assert len(got.logprobs) == NEW_TOKENS
        for pos, (token, position) in enumerate(zip(ref_tokens, got.logprobs, strict=True)):
            ref = ref_logprobs[pos]
            ref_top = torch.topk(ref, TOP)
            assert token in position
            assert set(position) == set(ref_top.indices.tolist()), (prompt, pos)
            for token_id, lp in position.items():
                assert abs(lp.logprob - ref[token_id].item()) < TOL, (prompt, pos, token_id)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_greedy_tokens_and_logprobs_match_transformers(
    arch: str, tokenizer_dir: Path, tmp_path: Path
) -> None:
    """Each architecture (GQA 4 q / 2 kv heads; untied LM head; Qwen2's qkv bias; Qwen3's q/k
    norm) greedily decodes 9 prompts of different lengths, several sharing a multi-block prefix,
    exactly as transformers does, with top-5 logprobs within 1e-3."""
    assert_parity(make_tiny_checkpoint(arch, tmp_path / "model", tokenizer_dir))


def test_tied_embeddings_match_transformers(tokenizer_dir: Path, tmp_path: Path) -> None:
    """With tie_word_embeddings the LM head is the embedding matrix (the checkpoint carries no
    lm_head.weight), as in SmolLM2."""
    path = make_tiny_checkpoint(
        "LlamaForCausalLM", tmp_path / "model", tokenizer_dir, tie_word_embeddings=True
    )
    from safetensors import safe_open

    with safe_open(str(path / "model.safetensors"), "pt") as f:
        assert "lm_head.weight" not in f.keys()
    assert_parity(path)


ROPE_SCALINGS = {
    "linear": {"rope_type": "linear", "factor": 3.0},
    "llama3": {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    },
    "yarn": {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 128},
}


@pytest.mark.parametrize("kind", list(ROPE_SCALINGS))
def test_rope_scaling_matches_transformers(kind: str, tokenizer_dir: Path, tmp_path: Path) -> None:
    """Llama with scaled rope (transformers 5 reads it from ``rope_parameters``) decodes as
    transformers does."""
    rope = {"rope_theta": 10000.0, **ROPE_SCALINGS[kind]}
    path = make_tiny_checkpoint(
        "LlamaForCausalLM", tmp_path / "model", tokenizer_dir, rope_parameters=rope
    )
    saved = transformers.AutoConfig.from_pretrained(path).rope_parameters
    assert saved["rope_type"] == kind
    assert_parity(path, PROMPTS[:5])


def test_unsupported_architecture_names_it_and_lists_supported(
    tokenizer_dir: Path, tmp_path: Path
) -> None:
    """A checkpoint of an architecture no plugin registers fails with a ValueError that names it
    and lists the supported architectures."""
    path = tmp_path / "gpt2"
    config = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=49152)
    config.architectures = ["GPT2LMHeadModel"]
    config.save_pretrained(path)
    for f in tokenizer_dir.iterdir():
        shutil.copy(f, path / f.name)
    with pytest.raises(ValueError, match="GPT2LMHeadModel") as excinfo:
        LLM(str(path), dtype="float32", kv_cache_memory=KV_BYTES)
    for arch in ARCHITECTURES:
        assert arch in str(excinfo.value)
