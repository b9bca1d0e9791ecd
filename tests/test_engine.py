"""The engine on the real default model (SmolLM2-135M-Instruct, float32 on CPU).

Invariance: greedy outputs do not depend on prefix caching, chunked prefill or preemption.
Prefix caching saves work. Sampler semantics hold end to end. After every test every KV
block of every engine is free again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from pagoda import LLM, SamplingParams
from pagoda.core.engine import LLMEngine
from pagoda.core.scheduler import SchedulerOutput

pytestmark = pytest.mark.slow

BLOCK = 16
BLOCK_BYTES = 737_280  # one 16-token block of the default model's K and V, float32
GREEDY = SamplingParams(temperature=0, max_tokens=16)

SHARED = (
    "You are a careful assistant who answers questions about geography, history and science "
    "in short, clear sentences. Always be accurate and polite, never invent facts, and say "
    "so when you do not know the answer. Question: "
)
PROMPTS = [
    "The capital of France is",
    SHARED + "What is the largest ocean on Earth?",
    "1, 2, 3, 4, 5,",
    SHARED + "Who wrote the play Romeo and Juliet?",
    "Once upon a time, in a small village at the foot of the mountains, there lived an old "
    "clockmaker who",
    SHARED + "Why is the sky blue? Explain it to a child.",
    "Hello",
    SHARED + "What is the boiling point of water at sea level?",
]

_engines: list[LLM] = []


def make_llm(**kwargs) -> LLM:
    llm = LLM(**kwargs)
    _engines.append(llm)
    return llm


@pytest.fixture(autouse=True)
def all_blocks_free_after_each_test() -> Iterator[None]:
    yield
    for llm in _engines:
        engine = llm.llm_engine
        kv = engine.scheduler.kv
        assert kv.num_free_blocks == kv.pool.num_blocks, "KV blocks leaked"
        assert not engine.scheduler.has_unfinished_requests()
        assert not engine.has_unfinished_requests()


@pytest.fixture(scope="module")
def llm() -> Iterator[LLM]:
    """Default options (prefix caching on), a 256-block KV cache."""
    llm = make_llm(kv_cache_memory=256 * BLOCK_BYTES)
    yield llm
    _engines.remove(llm)


@pytest.fixture(scope="module")
def reference(llm: LLM) -> list[list[int]]:
    """Greedy token ids of PROMPTS from an engine without prefix caching, all in one batch."""
    plain = make_llm(kv_cache_memory=256 * BLOCK_BYTES, enable_prefix_caching=False)
    try:
        outs = plain.generate(PROMPTS, GREEDY, use_tqdm=False)
        assert plain.llm_engine.scheduler.kv.stats.hits == 0
        assert plain.llm_engine.scheduler.num_preemptions == 0
    finally:
        _engines.remove(plain)
    return [o.outputs[0].token_ids for o in outs]


def with_(params: SamplingParams, **changes) -> SamplingParams:
    return dataclasses.replace(params, **changes)


def complete(llm: LLM, prompt, params: SamplingParams):
    """The single completion of one prompt."""
    (out,) = llm.generate(prompt, params, use_tqdm=False)
    return out.outputs[0]


def greedy_ids(llm: LLM, prompts=PROMPTS) -> list[list[int]]:
    outs = llm.generate(prompts, GREEDY, use_tqdm=False)
    assert all(len(o.outputs[0].token_ids) > 0 for o in outs)
    return [o.outputs[0].token_ids for o in outs]


def record_schedules(engine: LLMEngine) -> list[SchedulerOutput]:
    """Wrap the engine's scheduler so every step's batch is kept."""
    steps: list[SchedulerOutput] = []
    schedule = engine.scheduler.schedule

    def recording() -> SchedulerOutput:
        out = schedule()
        steps.append(out)
        return out

    engine.scheduler.schedule = recording  # type: ignore[method-assign]
    return steps


def tokens_computed_for(steps: list[SchedulerOutput], request_id: str) -> int:
    return sum(
        s.num_new_tokens for o in steps for s in o.scheduled if s.request.request_id == request_id
    )


# ---------------------------------------------------------------------------------- invariance


def test_prefix_caching_does_not_change_greedy_outputs(llm, reference):
    assert max(len(p) for p in PROMPTS) > 3 * BLOCK  # the shared prefix spans full blocks
    stats = llm.llm_engine.scheduler.kv.stats
    hits = stats.hits
    assert greedy_ids(llm) == reference  # requests of one batch share blocks in flight
    assert stats.hits > hits
    hits = stats.hits
    assert greedy_ids(llm) == reference  # and all of them hit the finished ones' blocks
    assert stats.hits - hits >= 4 * 2 * BLOCK


def test_chunked_prefill_does_not_change_greedy_outputs(reference):
    llm = make_llm(kv_cache_memory=256 * BLOCK_BYTES, max_num_batched_tokens=16)
    try:
        steps = record_schedules(llm.llm_engine)
        assert greedy_ids(llm) == reference
        assert max(o.num_tokens for o in steps) == 16
        chunks_of_longest = sum(
            1
            for o in steps
            for s in o.scheduled
            if s.request.request_id == "1" and s.num_new_tokens > 1
        )
        assert chunks_of_longest >= 3  # a ~60-token prompt took several prefill steps
    finally:
        _engines.remove(llm)


@pytest.fixture(scope="module")
def small_kv_llm() -> Iterator[LLM]:
    """A KV cache of 10 blocks (160 tokens): far less than PROMPTS need at once."""
    llm = make_llm(kv_cache_memory=10 * BLOCK_BYTES)
    assert llm.llm_engine.scheduler.kv.pool.num_blocks == 10
    yield llm
    _engines.remove(llm)


def test_preemption_does_not_change_greedy_outputs(small_kv_llm, reference):
    engine = small_kv_llm.llm_engine
    longest = max(len(engine.tokenizer.encode(p)) for p in PROMPTS)
    assert longest + GREEDY.max_tokens <= 10 * BLOCK  # yet every request fits alone
    assert greedy_ids(small_kv_llm) == reference
    assert engine.scheduler.num_preemptions > 0


def test_a_request_that_outgrows_the_whole_kv_cache_stops_with_length(small_kv_llm):
    # 150 prompt tokens + 40 wanted > 160 slots: preemption cannot help, so the request must
    # end (finish_reason "length") instead of being preempted and retried forever.
    engine = small_kv_llm.llm_engine
    prompt = ([1] + engine.tokenizer.encode(PROMPTS[4]) * 10)[:150]
    params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    engine.add_request("outgrows", {"prompt_token_ids": prompt}, params)
    final = None
    for _ in range(100):
        for out in engine.step():
            final = out if out.finished else final
        if final is not None:
            break
    else:
        engine.abort_request("outgrows")
        pytest.fail("the request neither progressed nor finished")
    completion = final.outputs[0]
    assert completion.finish_reason == "length"
    assert len(prompt) + len(completion.token_ids) == 10 * BLOCK + 1  # every slot was used


# ----------------------------------------------------------------------------- prefix caching


def test_a_request_sharing_a_three_block_prefix_computes_only_the_rest(llm):
    engine = llm.llm_engine
    tok = llm.get_tokenizer()
    text = (
        "Notes on the migration of arctic terns, written by a field biologist who spent "
        "eleven summers counting nests on the islands north of the polar circle and "
        "comparing the numbers with the records of earlier expeditions to the region, "
        "together with remarks on weather, food supply, predators and the behaviour of "
        "the chicks in their first weeks."
    )
    prefix = tok.encode(text)[: 3 * BLOCK]
    assert len(prefix) == 3 * BLOCK
    first = prefix + tok.encode(" Summary: the birds", add_special_tokens=False)
    second = prefix + tok.encode(" In conclusion, these small seabirds", add_special_tokens=False)
    assert first[3 * BLOCK] != second[3 * BLOCK]
    params = SamplingParams(temperature=0, max_tokens=4)

    out1 = llm.generate({"prompt_token_ids": first}, params, use_tqdm=False)[0]
    assert out1.num_cached_tokens == 0  # a fresh prefix: nothing to hit

    stats = engine.scheduler.kv.stats
    queries, hits = stats.queries, stats.hits
    steps = record_schedules(engine)
    try:
        out2 = llm.generate({"prompt_token_ids": second}, params, use_tqdm=False)[0]
    finally:
        del engine.scheduler.schedule  # back to the class's method
    assert stats.hits - hits == 3 * BLOCK
    assert stats.queries - queries == len(second)
    assert out2.num_cached_tokens == 3 * BLOCK
    # Only the tokens after the prefix are prefilled, then one per later sampled token.
    computed = tokens_computed_for(steps, out2.request_id)
    assert computed == len(second) - 3 * BLOCK + len(out2.outputs[0].token_ids) - 1


def test_prefix_cache_hits_give_the_same_tokens_as_computing_everything(llm):
    tok = llm.get_tokenizer()
    prompt = tok.encode(SHARED + "Name three planets of the solar system.")
    params = SamplingParams(temperature=0, max_tokens=12)
    cold = llm.generate({"prompt_token_ids": prompt}, params, use_tqdm=False)[0]
    warm = llm.generate({"prompt_token_ids": prompt}, params, use_tqdm=False)[0]
    assert warm.num_cached_tokens == (len(prompt) - 1) // BLOCK * BLOCK > cold.num_cached_tokens
    assert warm.outputs[0].token_ids == cold.outputs[0].token_ids


# ---------------------------------------------------------------------------- sampler semantics


def chat_prompt(llm: LLM, question: str) -> str:
    return llm.get_tokenizer().apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )


def test_seeded_sampling_is_reproducible_whatever_the_batch_mates(llm):
    prompt = "My favourite animal is"
    seeded = SamplingParams(temperature=0.8, seed=123, max_tokens=16)
    alone = complete(llm, prompt, seeded).token_ids
    mates = ["Tell me a story about a dragon", "The weather today", "Why do cats purr?"]
    batch1 = llm.generate(
        [mates[0], prompt, mates[1]],
        [SamplingParams(temperature=1.0, max_tokens=20), seeded, GREEDY],
        use_tqdm=False,
    )
    batch2 = llm.generate(
        [prompt, mates[2]],
        [seeded, SamplingParams(temperature=1.2, seed=5, max_tokens=9)],
        use_tqdm=False,
    )
    assert batch1[1].outputs[0].token_ids == alone
    assert batch2[0].outputs[0].token_ids == alone
    other_seed = SamplingParams(temperature=0.8, seed=124, max_tokens=16)
    assert complete(llm, prompt, other_seed).token_ids != alone


def test_top_k_1_equals_greedy(llm):
    prompts = PROMPTS[:4]
    top1 = SamplingParams(temperature=1.5, top_k=1, max_tokens=16)
    outs = llm.generate(prompts, top1, use_tqdm=False)
    assert [o.outputs[0].token_ids for o in outs] == greedy_ids(llm, prompts)


def test_stop_string_cuts_the_output_before_it(llm):
    prompt = "The capital of France is"
    params = SamplingParams(temperature=0, max_tokens=24)
    full = complete(llm, prompt, params).text
    cut = len(full) // 3
    stop = full[cut : cut + 6]
    assert len(stop) == 6 and full.index(stop) == cut

    out = complete(llm, prompt, with_(params, stop=[stop]))
    assert out.text == full[:cut]
    assert out.finish_reason == "stop"
    assert out.stop_reason == stop

    keep = with_(params, stop=[stop], include_stop_str_in_output=True)
    out = complete(llm, prompt, keep)
    assert out.text == full[: cut + len(stop)]
    assert out.stop_reason == stop


def test_stop_token_ids_stop_with_the_token_as_stop_reason(llm):
    prompt = "1, 2, 3, 4, 5,"
    params = SamplingParams(temperature=0, max_tokens=24)
    ids = complete(llm, prompt, params).token_ids
    i = next(i for i in range(3, len(ids)) if ids[i] not in ids[:i])
    out = llm.generate(prompt, with_(params, stop_token_ids=[ids[i]]), use_tqdm=False)
    completion = out[0].outputs[0]
    assert completion.token_ids == ids[: i + 1]
    assert completion.finish_reason == "stop"
    assert completion.stop_reason == ids[i]


def test_min_tokens_suppresses_eos_and_ignore_eos_runs_to_max_tokens(llm):
    eos = 2  # <|im_end|>
    prompt = chat_prompt(llm, "Say only the word yes.")
    params = SamplingParams(temperature=0, max_tokens=32)
    short = complete(llm, prompt, params)
    assert short.token_ids[-1] == eos and len(short.token_ids) < 8  # the model stops early
    assert short.finish_reason == "stop" and short.stop_reason is None

    n = len(short.token_ids) + 6
    out = complete(llm, prompt, with_(params, min_tokens=n))
    assert len(out.token_ids) >= n
    assert eos not in out.token_ids[:n]

    out = complete(llm, prompt, with_(params, ignore_eos=True, max_tokens=n))
    assert len(out.token_ids) == n
    assert out.finish_reason == "length"


def test_logprobs_have_one_dict_per_token_with_the_chosen_token_and_k_others(llm):
    k = 3
    greedy_params = SamplingParams(temperature=0, max_tokens=8, logprobs=k)
    greedy = complete(llm, "The capital of France is", greedy_params)
    assert len(greedy.logprobs) == len(greedy.token_ids) == 8
    total = 0.0
    for token, position in zip(greedy.token_ids, greedy.logprobs, strict=True):
        assert len(position) == k  # the greedy token is the top-1 itself
        assert position[token].rank == 1
        ranked = sorted(position.values(), key=lambda lp: lp.rank)
        assert [lp.rank for lp in ranked] == [1, 2, 3]
        assert all(a.logprob >= b.logprob for a, b in zip(ranked, ranked[1:], strict=False))
        assert all(lp.logprob <= 0 and lp.decoded_token is not None for lp in ranked)
        total += position[token].logprob
    assert greedy.cumulative_logprob == pytest.approx(total, abs=1e-4)

    sampled_params = SamplingParams(temperature=1.5, seed=1, max_tokens=24, logprobs=k)
    sampled = complete(llm, "Once upon a time", sampled_params)
    assert len(sampled.logprobs) == len(sampled.token_ids)
    for token, position in zip(sampled.token_ids, sampled.logprobs, strict=True):
        assert token in position  # the sampled token is always there, even outside the top k
        top = sorted(lp.rank for t, lp in position.items() if t != token or lp.rank <= k)
        assert top == list(range(1, k + 1))
        assert len(position) == (k if position[token].rank <= k else k + 1)


def test_n_2_gives_two_completions_and_the_first_matches_n_1(llm):
    prompt = "My favourite colour is"
    params = SamplingParams(n=2, temperature=1.0, seed=7, max_tokens=10)
    (out,) = llm.generate(prompt, params, use_tqdm=False)
    assert [c.index for c in out.outputs] == [0, 1]
    assert all(len(c.token_ids) > 0 and c.finish_reason for c in out.outputs)
    assert out.outputs[0].token_ids != out.outputs[1].token_ids
    single = llm.generate(prompt, with_(params, n=1), use_tqdm=False)[0]
    assert single.outputs[0].token_ids == out.outputs[0].token_ids


def test_prompt_longer_than_max_model_len_is_rejected_naming_the_lengths(llm):
    limit = llm.llm_engine.max_model_len
    too_long = {"prompt_token_ids": [42] * (limit + 1)}
    with pytest.raises(ValueError, match=rf"{limit}.*{limit + 1}"):
        llm.generate(too_long, GREEDY, use_tqdm=False)


def test_abort_frees_blocks_at_once(llm):
    engine = llm.llm_engine
    kv = engine.scheduler.kv
    engine.add_request("to-abort", PROMPTS[5], SamplingParams(temperature=0, max_tokens=100))
    engine.step()
    engine.step()
    assert kv.num_free_blocks < kv.pool.num_blocks
    engine.abort_request("to-abort")
    assert kv.num_free_blocks == kv.pool.num_blocks
    assert not engine.has_unfinished_requests()
    assert engine.step() == []
