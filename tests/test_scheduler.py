"""Scheduler with fake requests: token budget, sequence limit, chunked prefill, preemption.

No model runs: ``run_step`` plays the engine's part (advance the computed counts, append a
sampled token to each request whose step reached its end, finish at ``max_tokens``).
"""

import pytest

from pagoda.config import CacheConfig, SchedulerConfig
from pagoda.core.request import Request, RequestStatus
from pagoda.core.scheduler import Scheduler, SchedulerOutput
from pagoda.sampling_params import SamplingParams

BS = 4


def make_scheduler(
    num_blocks: int = 64,
    budget: int = 64,
    max_num_seqs: int = 16,
    caching: bool = False,
) -> Scheduler:
    return Scheduler(
        SchedulerConfig(max_num_seqs=max_num_seqs, max_num_batched_tokens=budget),
        CacheConfig(block_size=BS, enable_prefix_caching=caching),
        num_blocks,
    )


def make_request(rid: str, prompt_len: int, max_tokens: int = 4, first: int = 0) -> Request:
    prompt = [first + i for i in range(prompt_len)]
    return Request(rid, prompt, SamplingParams(max_tokens=max_tokens), frozenset(), 0.0, 1024)


def run_step(sched: Scheduler) -> SchedulerOutput:
    out = sched.schedule()
    sampling = [s.request for s in out.scheduled if s.samples]
    for s in out.scheduled:
        s.request.num_computed_tokens += s.num_new_tokens
    for r in sampling:
        r.append_output_token(1000 + r.num_output_tokens)
        if r.num_output_tokens >= r.sampling_params.max_tokens:
            sched.finish(r, RequestStatus.FINISHED_LENGTH)
    return out


def run_to_completion(sched: Scheduler, max_steps: int = 500) -> list[SchedulerOutput]:
    outs = []
    while sched.has_unfinished_requests():
        outs.append(run_step(sched))
        assert len(outs) < max_steps, "the scheduler made no progress"
    return outs


def scheduled(out: SchedulerOutput) -> list[tuple[str, int]]:
    return [(s.request.request_id, s.num_new_tokens) for s in out.scheduled]


def test_decodes_are_scheduled_first_and_prefills_get_the_leftover_budget():
    sched = make_scheduler(budget=8)
    a, b = make_request("a", 3), make_request("b", 5)
    sched.add_request(a)
    sched.add_request(b)
    assert scheduled(run_step(sched)) == [("a", 3), ("b", 5)]
    sched.add_request(make_request("c", 20))
    out = run_step(sched)
    assert scheduled(out) == [("a", 1), ("b", 1), ("c", 6)]
    assert out.num_decodes == 2
    assert out.num_tokens == 8


def test_a_one_token_step_is_packed_with_the_decodes():
    # The flat batch must hold every one-token query before any longer one.
    sched = make_scheduler(budget=64)
    sched.add_request(make_request("a", 3))
    run_step(sched)
    sched.add_request(make_request("long", 9))
    sched.add_request(make_request("one", 1))
    out = run_step(sched)
    assert scheduled(out) == [("a", 1), ("one", 1), ("long", 9)]
    assert out.num_decodes == 2


def test_max_num_batched_tokens_is_never_exceeded_and_every_token_is_computed():
    sched = make_scheduler(budget=16)
    requests = [make_request(f"r{i}", n, max_tokens=5) for i, n in enumerate([7, 30, 3, 18, 11])]
    for r in requests:
        sched.add_request(r)
    outs = run_to_completion(sched)
    assert max(o.num_tokens for o in outs) == 16
    assert outs[0].num_tokens == 16  # the budget is filled, not just respected
    per_request: dict[str, int] = {}
    for o in outs:
        for rid, n in scheduled(o):
            per_request[rid] = per_request.get(rid, 0) + n
    # Each prompt is computed once, plus one step per sampled token after the first.
    assert per_request == {r.request_id: r.num_prompt_tokens + 4 for r in requests}
    assert all(r.num_output_tokens == 5 for r in requests)
    assert sched.kv.num_free_blocks == sched.kv.pool.num_blocks


def test_max_num_seqs_limits_running_requests():
    sched = make_scheduler(max_num_seqs=2)
    requests = [make_request(f"r{i}", 4, max_tokens=3) for i in range(5)]
    for r in requests:
        sched.add_request(r)
    out = run_step(sched)
    assert [rid for rid, _ in scheduled(out)] == ["r0", "r1"]
    while sched.has_unfinished_requests():
        out = run_step(sched)
        assert len(out.scheduled) <= 2
        assert len(sched.running) <= 2
    assert all(r.num_output_tokens == 3 for r in requests)


def test_a_long_prompt_is_prefilled_in_chunks_and_samples_only_at_its_end():
    sched = make_scheduler(budget=16)
    r = make_request("long", 50, max_tokens=2)
    sched.add_request(r)
    chunks = []
    for _ in range(4):
        out = sched.schedule()
        (s,) = out.scheduled
        chunks.append((s.num_new_tokens, s.samples))
        r.num_computed_tokens += s.num_new_tokens
    assert chunks == [(16, False), (16, False), (16, False), (2, True)]
    assert r.num_computed_tokens == 50
    assert len(sched.kv.block_ids(r)) == 13  # ceil(50 / 4)


def test_newest_running_request_is_preempted_when_blocks_run_out():
    # 6 blocks of 4: three 7-token prompts take 2 blocks each; the 9th token of any needs a 7th.
    sched = make_scheduler(num_blocks=6)
    a, b, c = (make_request(x, 7, max_tokens=6, first=10 * i) for i, x in enumerate("abc"))
    for r in (a, b, c):
        sched.add_request(r)
    run_step(sched)  # prefill: 8 tokens each, 7 computed
    run_step(sched)  # decode: 9 tokens each, 8 computed
    assert sched.kv.num_free_blocks == 0
    out = run_step(sched)
    assert out.preempted == [c]
    assert sched.num_preemptions == 1 and c.num_preemptions == 1
    assert c.status is RequestStatus.PREEMPTED
    assert c.num_computed_tokens == 0
    assert sched.kv.block_ids(c) == []
    assert sched.waiting[0] is c
    assert scheduled(out) == [("a", 1), ("b", 1)]  # and nothing admitted in that step
    assert a.status is b.status is RequestStatus.RUNNING


def test_a_preempted_request_is_recomputed_later_and_completes():
    sched = make_scheduler(num_blocks=4)
    a = make_request("a", 7, max_tokens=6)
    b = make_request("b", 7, max_tokens=6, first=50)
    sched.add_request(a)
    sched.add_request(b)
    run_step(sched)
    run_step(sched)
    out = run_step(sched)
    assert out.preempted == [b]
    b_tokens = list(b.token_ids)  # 7 prompt + 2 sampled
    assert len(b_tokens) == 9
    recompute = None
    while sched.has_unfinished_requests():
        before = b.num_output_tokens
        out = run_step(sched)
        for s in out.scheduled:
            if s.request is b and recompute is None:
                recompute = (s.num_new_tokens, b.num_output_tokens == before + 1)
    assert a.status is RequestStatus.FINISHED_LENGTH
    # Re-admitted once `a` freed its blocks: prompt and sampled tokens are computed again,
    # and that step samples b's next token.
    assert recompute == (9, True)
    assert b.token_ids[:9] == b_tokens
    assert b.num_output_tokens == 6
    assert b.status is RequestStatus.FINISHED_LENGTH
    assert sched.kv.num_free_blocks == 4


def test_with_prefix_caching_a_preempted_request_hits_its_surviving_blocks():
    sched = make_scheduler(num_blocks=4, caching=True)
    a = make_request("a", 7, max_tokens=3)
    b = make_request("b", 7, max_tokens=6, first=50)
    sched.add_request(a)
    sched.add_request(b)
    run_step(sched)
    run_step(sched)
    assert run_step(sched).preempted == [b]  # and `a` takes b's tail block, then finishes
    assert a.status.finished
    hits = sched.kv.stats.hits
    out = run_step(sched)
    # b's first block (tokens 0-3) is still cached: only tokens 4-8 are computed again.
    assert scheduled(out) == [("b", 5)]
    assert sched.kv.stats.hits - hits == 4
    assert b.num_computed_tokens == 9


def test_prefix_hit_at_admission_skips_the_cached_tokens():
    sched = make_scheduler(caching=True)
    a = make_request("a", 9, max_tokens=1)
    sched.add_request(a)
    run_step(sched)
    assert a.status.finished
    b = Request("b", list(range(8)) + [77, 78, 79], SamplingParams(), frozenset(), 0.0, 1024)
    sched.add_request(b)
    assert scheduled(sched.schedule()) == [("b", 3)]
    assert b.num_cached_tokens == 8
    assert b.num_computed_tokens == 8


@pytest.mark.parametrize("where", ["running", "waiting", "preempted"])
def test_finish_frees_blocks_at_once_and_forgets_the_request(where):
    sched = make_scheduler(num_blocks=4)
    a = make_request("a", 7, max_tokens=10)
    b = make_request("b", 7, max_tokens=10, first=50)
    sched.add_request(a)
    sched.add_request(b)
    if where != "waiting":
        run_step(sched)
        assert sched.kv.num_free_blocks == 0
    if where == "preempted":
        run_step(sched)
        assert run_step(sched).preempted == [b]
    sched.finish(b, RequestStatus.FINISHED_ABORTED)
    sched.finish(a, RequestStatus.FINISHED_ABORTED)
    assert sched.kv.num_free_blocks == 4
    assert not sched.has_unfinished_requests()
    assert a.status is b.status is RequestStatus.FINISHED_ABORTED
    assert sched.schedule().is_empty
