"""The engine on CUDA gives the CPU path's greedy tokens on the tiny parity models (float32),
with CUDA graphs and without; run on a machine with a GPU (``-m cuda``), skipped elsewhere."""

import random
from pathlib import Path

import pytest
import torch
from tiny_models import ARCHITECTURES, make_tiny_checkpoint

from pagoda import LLM, SamplingParams

TOKENIZER = Path(__file__).resolve().parent.parent / "benchmarks" / "tokenizer"
NEW_TOKENS = 24

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _prompts() -> list[dict]:
    rng = random.Random(0)
    # Ragged lengths across block boundaries; two share a 40-token prefix (prefix caching).
    shared = [rng.randrange(100, 40000) for _ in range(40)]
    prompts = [[rng.randrange(100, 40000) for _ in range(n)] for n in (1, 7, 16, 17, 33, 100)]
    prompts += [shared + [5, 6], shared + [7]]
    return [{"prompt_token_ids": p} for p in prompts]


def _generate(checkpoint: Path, **kwargs) -> list[list[int]]:
    llm = LLM(
        str(checkpoint),
        tokenizer=str(TOKENIZER),
        dtype="float32",
        max_num_seqs=3,  # several waves: decode batches of 1..3 rows mixed with prefills
        block_size=16,
        **kwargs,
    )
    params = SamplingParams(temperature=0, max_tokens=NEW_TOKENS, ignore_eos=True)
    outputs = llm.generate(_prompts(), params, use_tqdm=False)
    tokens = [list(o.outputs[0].token_ids) for o in outputs]
    llm.llm_engine.executor.runner.release()
    return tokens


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_cuda_greedy_tokens_equal_cpu(arch: str, tmp_path: Path) -> None:
    checkpoint = make_tiny_checkpoint(arch, tmp_path / arch, TOKENIZER)
    cpu = _generate(checkpoint, device="cpu", kv_cache_memory=16 << 20)
    graphs = _generate(checkpoint, device="cuda", gpu_memory_utilization=0.3)  # async: default
    eager = _generate(checkpoint, device="cuda", gpu_memory_utilization=0.3, enforce_eager=True)
    sync = _generate(checkpoint, device="cuda", gpu_memory_utilization=0.3, async_scheduling=False)
    assert eager == cpu
    assert graphs == cpu
    assert sync == cpu


def _cuda_llm(checkpoint: Path, **kwargs) -> LLM:
    return LLM(
        str(checkpoint),
        tokenizer=str(TOKENIZER),
        device="cuda",
        gpu_memory_utilization=0.3,
        **kwargs,
    )


def test_cuda_engine_uses_graphs_for_decode(tmp_path: Path) -> None:
    checkpoint = make_tiny_checkpoint("LlamaForCausalLM", tmp_path / "m", TOKENIZER)
    llm = _cuda_llm(checkpoint, max_num_seqs=20)
    runner = llm.llm_engine.executor.runner
    assert runner.graphs is not None
    assert runner.graphs.sizes == [1, 2, 4, 8, 16, 20]
    assert runner.dtype == torch.bfloat16  # CUDA's default
    replays = []
    original = runner.graphs.run
    runner.graphs.run = lambda sched, previous=None: (
        replays.append(len(sched.scheduled)) or original(sched, previous)
    )
    assert llm.llm_engine.async_scheduling  # CUDA's default
    llm.generate(_prompts()[:5], SamplingParams(max_tokens=4, ignore_eos=True), use_tqdm=False)
    assert replays and set(replays) <= {5, 4, 3, 2, 1}
    runner.release()


def test_cuda_engine_uses_piecewise_graphs_for_prefill(tmp_path: Path) -> None:
    checkpoint = make_tiny_checkpoint("LlamaForCausalLM", tmp_path / "m", TOKENIZER)
    # A 160-token budget prefills the 100-token prompt in chunks, mixed with decodes. float32:
    # a padded step may get another GEMM kernel, whose bf16 rounding could flip a greedy pick.
    options = dict(max_num_seqs=4, max_num_batched_tokens=160, dtype="float32")
    llm = _cuda_llm(checkpoint, **options)
    runner = llm.llm_engine.executor.runner
    assert runner.piecewise is not None
    assert runner.piecewise.sizes == [64, 128, 160]
    steps = []
    original = runner.piecewise.forward
    runner.piecewise.forward = lambda ctx, n: (
        steps.append((ctx.meta.num_decodes, n)) or original(ctx, n)
    )
    params = SamplingParams(temperature=0, max_tokens=NEW_TOKENS, ignore_eos=True)
    outputs = llm.generate(_prompts(), params, use_tqdm=False)
    runner.release()
    assert any(decodes and tokens > decodes for decodes, tokens in steps)  # mixed steps
    assert all(tokens <= 160 for _, tokens in steps)
    eager = _cuda_llm(checkpoint, **options, enforce_eager=True)
    assert eager.llm_engine.executor.runner.piecewise is None
    expected = eager.generate(_prompts(), params, use_tqdm=False)
    eager.llm_engine.executor.runner.release()
    assert [o.outputs[0].token_ids for o in outputs] == [o.outputs[0].token_ids for o in expected]
