"""Async scheduling (step n+1 launched before step n's tokens are read back) on the CPU, on the
real default model: it gives exactly the outputs of synchronous steps for every kind of
request, wastes no step on a request that reaches max_tokens, survives preemption, and an
abort while a step is in flight disturbs no other request."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pagoda import LLM, SamplingParams
from pagoda.core.engine import LLMEngine
from pagoda.core.model_runner import LaunchedStep
from pagoda.core.scheduler import SchedulerOutput

pytestmark = pytest.mark.slow

BLOCK_BYTES = 737_280  # one 16-token block of the default model's K and V, float32
PROMPTS = [
    "The capital of France is",
    "1, 2, 3, 4, 5,",
    "Once upon a time, in a small village at the foot of the mountains, there lived an old "
    "clockmaker who",
    "Hello",
    "Write a haiku about the sea.",
    "The three primary colours are",
    "def fibonacci(n):",
    "Q: What is 12 times 12?\nA:",
]
# One of each kind: plain greedy, stops, EOS, seeded sampling with n=2, logprobs, and the
# kinds that need their tokens on the host before their next step (min_tokens, penalties).
PARAMS = [
    SamplingParams(temperature=0, max_tokens=24),
    SamplingParams(temperature=0, max_tokens=40, stop=[" 9"], include_stop_str_in_output=True),
    SamplingParams(temperature=0.8, top_p=0.9, top_k=40, max_tokens=20, seed=7, n=2),
    SamplingParams(temperature=0, max_tokens=64),  # may stop on EOS
    SamplingParams(temperature=0, max_tokens=12, logprobs=3),
    SamplingParams(temperature=0, max_tokens=16, min_tokens=10, stop_token_ids=[13]),
    SamplingParams(temperature=0, max_tokens=16, repetition_penalty=1.3),
    SamplingParams(temperature=1.0, max_tokens=16, seed=3, ignore_eos=True),
]


def summary(outputs) -> list[list[tuple]]:
    return [
        [(c.token_ids, c.text, c.finish_reason, c.stop_reason, c.logprobs) for c in out.outputs]
        for out in outputs
    ]


@pytest.fixture(scope="module")
def sync_llm() -> LLM:
    llm = LLM(kv_cache_memory=256 * BLOCK_BYTES)
    assert not llm.llm_engine.async_scheduling  # the CPU default
    return llm


@pytest.fixture(scope="module")
def async_llm() -> LLM:
    llm = LLM(kv_cache_memory=256 * BLOCK_BYTES, async_scheduling=True)
    assert llm.llm_engine.async_scheduling
    return llm


def count_overlapped_launches(engine: LLMEngine) -> list[int]:
    """Wrap the executor so each launch records whether a step was still in flight."""
    overlapped = [0]
    launch = engine.executor.launch_model

    def recording(sched: SchedulerOutput) -> LaunchedStep:
        overlapped[0] += engine.in_flight is not None
        return launch(sched)

    engine.executor.launch_model = recording  # type: ignore[method-assign]
    return overlapped


@pytest.fixture(autouse=True)
def nothing_left_behind(sync_llm: LLM, async_llm: LLM) -> Iterator[None]:
    yield
    for llm in (sync_llm, async_llm):
        engine = llm.llm_engine
        kv = engine.scheduler.kv
        assert kv.num_free_blocks == kv.pool.num_blocks, "KV blocks leaked"
        assert not engine.has_unfinished_requests()
        assert all(r.num_pending_tokens == 0 for r in engine.requests.values())


def test_async_outputs_equal_sync_outputs(sync_llm: LLM, async_llm: LLM) -> None:
    overlapped = count_overlapped_launches(async_llm.llm_engine)
    expected = summary(sync_llm.generate(PROMPTS, PARAMS, use_tqdm=False))
    assert summary(async_llm.generate(PROMPTS, PARAMS, use_tqdm=False)) == expected
    assert overlapped[0] > 10  # most steps really were launched ahead


def test_plain_requests_are_launched_ahead_and_waste_no_step(async_llm: LLM) -> None:
    engine = async_llm.llm_engine
    steps: list[SchedulerOutput] = []
    schedule = engine.scheduler.schedule

    def recording() -> SchedulerOutput:
        steps.append(schedule())
        return steps[-1]

    engine.scheduler.schedule = recording  # type: ignore[method-assign]
    params = SamplingParams(temperature=0, max_tokens=9, ignore_eos=True)
    (out,) = async_llm.generate(["The capital of France is"], params, use_tqdm=False)
    del engine.scheduler.schedule
    assert len(out.outputs[0].token_ids) == 9
    # The prompt plus 8 decodes: the 9th token is never fed back, even though its step was
    # scheduled before the 8th token had reached the host.
    computed = sum(s.num_new_tokens for o in steps for s in o.scheduled)
    assert computed == len(out.prompt_token_ids) + 8


def test_async_scheduling_survives_preemption(sync_llm: LLM) -> None:
    params = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)
    expected = summary(sync_llm.generate(PROMPTS, params, use_tqdm=False))
    small = LLM(kv_cache_memory=10 * BLOCK_BYTES, async_scheduling=True)
    assert summary(small.generate(PROMPTS, params, use_tqdm=False)) == expected
    engine = small.llm_engine
    assert engine.scheduler.num_preemptions > 0
    assert engine.scheduler.kv.num_free_blocks == engine.scheduler.kv.pool.num_blocks


def test_abort_while_in_flight_disturbs_no_other_request(sync_llm: LLM, async_llm: LLM) -> None:
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    expected = summary(sync_llm.generate(PROMPTS[:3], params, use_tqdm=False))
    engine = async_llm.llm_engine
    for i, prompt in enumerate(PROMPTS[:3]):
        engine.add_request(str(i), prompt, params)
    while engine.in_flight is None or "1" not in {r.request_id for r in engine.in_flight.requests}:
        engine.step()
    engine.abort_request("1")  # its token of the in-flight step must go nowhere
    engine.add_request("1", PROMPTS[1], params)  # and not to a new request of the same id
    finals = {}
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.finished:
                finals[out.request_id] = out
    assert summary([finals[str(i)] for i in range(3)]) == expected
