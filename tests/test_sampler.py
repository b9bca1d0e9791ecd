"""Sampler on synthetic logits: each test names the behaviour it proves."""

from collections import Counter

import pytest
import torch

from pagoda.core.sampler import Sampler, SamplingRow, compute_prompt_logprobs
from pagoda.sampling_params import SamplingParams

VOCAB = 32
NEG = -100.0  # a logit no test expects to be picked


def make_row(
    params: SamplingParams | None = None,
    prompt: list[int] | None = None,
    output: list[int] | None = None,
    eos: frozenset[int] = frozenset(),
) -> SamplingRow:
    params = params or SamplingParams()
    generator = None if params.seed is None else torch.Generator().manual_seed(params.seed)
    return SamplingRow(
        params=params,
        prompt_token_ids=prompt or [],
        output_token_ids=output or [],
        generator=generator,
        eos_token_ids=eos,
    )


def logits_with(values: dict[int, float], vocab: int = VOCAB) -> torch.Tensor:
    """One row of logits: NEG everywhere except the given token ids."""
    row = torch.full((vocab,), NEG)
    for token_id, value in values.items():
        row[token_id] = value
    return row


def sample_one(params: SamplingParams, logits: torch.Tensor, **row_kwargs) -> int:
    return Sampler()(logits.unsqueeze(0), [make_row(params, **row_kwargs)]).sampled_token_ids[0]


GREEDY = SamplingParams(temperature=0.0)


def test_greedy_rows_take_the_argmax():
    logits = torch.randn(64, VOCAB, generator=torch.Generator().manual_seed(0))
    out = Sampler()(logits, [make_row(GREEDY) for _ in range(64)])
    assert out.sampled_token_ids == logits.argmax(-1).tolist()
    assert all(type(t) is int for t in out.sampled_token_ids)
    assert out.logprobs == [None] * 64


def test_top_k_one_equals_greedy_at_temperature_one():
    logits = torch.randn(50, VOCAB, generator=torch.Generator().manual_seed(1))
    rows = [make_row(SamplingParams(top_k=1, seed=i if i % 2 else None)) for i in range(50)]
    assert Sampler()(logits, rows).sampled_token_ids == logits.argmax(-1).tolist()


def test_greedy_rows_stay_argmax_in_a_batch_with_random_rows():
    logits = torch.randn(6, VOCAB, generator=torch.Generator().manual_seed(2))
    params = [GREEDY, SamplingParams(), GREEDY, SamplingParams(seed=3), SamplingParams(), GREEDY]
    out = Sampler()(logits, [make_row(p) for p in params]).sampled_token_ids
    argmax = logits.argmax(-1).tolist()
    assert [out[i] for i in (0, 2, 5)] == [argmax[i] for i in (0, 2, 5)]


def _seeded_run(seed: int, mates: list[SamplingParams], position: int, steps: int) -> list[int]:
    """Tokens of a seeded row sampled `steps` times with `mates` around it in the batch."""
    target_logits = torch.linspace(0.0, 1.0, VOCAB)  # flat enough that every draw matters
    target = make_row(SamplingParams(seed=seed, top_p=0.95))
    rows = [make_row(p) for p in mates]
    rows.insert(position, target)
    torch.manual_seed(1234 + len(mates))  # the unseeded mates' draws differ per layout
    tokens = []
    for _ in range(steps):
        logits = torch.randn(len(rows), VOCAB)
        logits[position] = target_logits
        tokens.append(Sampler()(logits, rows).sampled_token_ids[position])
    return tokens


def test_seeded_row_is_reproducible_whatever_its_batch_mates():
    alone = _seeded_run(seed=42, mates=[], position=0, steps=20)
    mates = [SamplingParams(), SamplingParams(seed=7), GREEDY, SamplingParams(top_k=3, seed=9)]
    crowded = _seeded_run(seed=42, mates=mates, position=2, steps=20)
    bigger = _seeded_run(seed=42, mates=mates * 4, position=11, steps=20)
    assert alone == crowded == bigger
    assert len(set(alone)) > 5  # really sampled, not a constant


def test_different_seeds_give_different_tokens():
    assert _seeded_run(1, [], 0, 20) != _seeded_run(2, [], 0, 20)


def _draw_many(params: SamplingParams, row_logits: torch.Tensor, draws: int = 4000) -> Counter:
    """Token counts over `draws` rows of the same logits, with a fixed global seed."""
    torch.manual_seed(0)
    logits = row_logits.expand(draws, -1).clone()
    out = Sampler()(logits, [make_row(params) for _ in range(draws)])
    return Counter(out.sampled_token_ids)


PROBS = torch.tensor([0.5, 0.3, 0.1, 0.06, 0.04])
LOGITS = torch.cat([PROBS.log(), torch.full((VOCAB - 5,), -1e9)])


def test_unrestricted_sampling_follows_the_softmax():
    counts = _draw_many(SamplingParams(), LOGITS)
    for token_id, prob in enumerate(PROBS.tolist()):
        assert counts[token_id] / 4000 == pytest.approx(prob, abs=0.03)


def test_temperature_sharpens_the_distribution():
    counts = _draw_many(SamplingParams(temperature=0.5), LOGITS)
    expected = torch.softmax(LOGITS / 0.5, -1)
    for token_id in range(5):
        assert counts[token_id] / 4000 == pytest.approx(expected[token_id].item(), abs=0.03)


def test_top_k_never_picks_tokens_outside_the_top_k():
    counts = _draw_many(SamplingParams(top_k=2), LOGITS)
    assert set(counts) == {0, 1}
    assert counts[0] / 4000 == pytest.approx(0.5 / 0.8, abs=0.03)


@pytest.mark.parametrize("other_top_k", [0, 4])
def test_each_row_keeps_its_own_top_k_in_a_mixed_batch(other_top_k):
    # other_top_k 0 takes the full-sort path, 4 the topk-candidates path.
    torch.manual_seed(0)
    params = [SamplingParams(top_k=2), SamplingParams(top_k=other_top_k)] * 2000
    out = Sampler()(LOGITS.expand(4000, -1).clone(), [make_row(p) for p in params])
    assert set(out.sampled_token_ids[0::2]) == {0, 1}
    assert set(out.sampled_token_ids[1::2]) == set(range(other_top_k or 5))


def test_top_p_never_picks_tokens_outside_the_nucleus():
    # Mass before token 1 is 0.5 < 0.75 (kept); before token 2 it is 0.8 (excluded).
    counts = _draw_many(SamplingParams(top_p=0.75), LOGITS)
    assert set(counts) == {0, 1}
    assert counts[0] / 4000 == pytest.approx(0.5 / 0.8, abs=0.03)


def test_top_p_applies_after_top_k():
    # After top-k=3 the kept probs are 0.5/0.9, 0.3/0.9, 0.1/0.9: the mass before token 2 is
    # 0.889 >= 0.85, so it is excluded. On the full distribution that mass is 0.8 (kept).
    counts = _draw_many(SamplingParams(top_k=3, top_p=0.85), LOGITS)
    assert set(counts) == {0, 1}


def test_min_p_never_picks_tokens_below_the_threshold():
    # Threshold 0.25 * 0.5 = 0.125: tokens 0 and 1 are kept, 2 (0.1) and below are not.
    counts = _draw_many(SamplingParams(min_p=0.25), LOGITS)
    assert set(counts) == {0, 1}
    assert counts[0] / 4000 == pytest.approx(0.5 / 0.8, abs=0.03)


@pytest.mark.parametrize(("rival", "expected"), [(1.9, 0), (2.1, 1)])
def test_repetition_penalty_divides_a_positive_logit(rival, expected):
    # Token 0 (4.0, seen in the prompt) becomes 4.0 / 2 = 2.0.
    params = SamplingParams(temperature=0.0, repetition_penalty=2.0)
    assert sample_one(params, logits_with({0: 4.0, 1: rival}), prompt=[0]) == expected


@pytest.mark.parametrize(("rival", "expected"), [(-2.1, 0), (-1.9, 1)])
def test_repetition_penalty_multiplies_a_negative_logit(rival, expected):
    # Token 0 (-1.0, seen in the output) becomes -1.0 * 2 = -2.0.
    params = SamplingParams(temperature=0.0, repetition_penalty=2.0)
    assert sample_one(params, logits_with({0: -1.0, 1: rival}), output=[0]) == expected


def test_repetition_penalty_ignores_unseen_tokens():
    params = SamplingParams(temperature=0.0, repetition_penalty=2.0)
    assert sample_one(params, logits_with({0: 4.0, 1: 3.0}), prompt=[5], output=[6]) == 0


@pytest.mark.parametrize(("rival", "expected"), [(2.4, 0), (2.6, 1)])
def test_frequency_penalty_subtracts_per_output_occurrence(rival, expected):
    # Token 0 occurs 3 times in the output: 4.0 - 3 * 0.5 = 2.5.
    params = SamplingParams(temperature=0.0, frequency_penalty=0.5)
    logits = logits_with({0: 4.0, 1: rival})
    assert sample_one(params, logits, output=[0, 7, 0, 0]) == expected


@pytest.mark.parametrize(("rival", "expected"), [(3.4, 0), (3.6, 1)])
def test_presence_penalty_subtracts_once_for_any_output_occurrence(rival, expected):
    # Token 0 occurs 3 times in the output: 4.0 - 0.5 = 3.5.
    params = SamplingParams(temperature=0.0, presence_penalty=0.5)
    logits = logits_with({0: 4.0, 1: rival})
    assert sample_one(params, logits, output=[0, 0, 0]) == expected


def test_presence_and_frequency_penalties_ignore_prompt_tokens():
    params = SamplingParams(temperature=0.0, presence_penalty=2.0, frequency_penalty=2.0)
    assert sample_one(params, logits_with({0: 4.0, 1: 3.9}), prompt=[0, 0, 0]) == 0


@pytest.mark.parametrize(("rival", "expected"), [(3.9, 5), (4.1, 1)])
def test_logit_bias_adds_to_the_logit(rival, expected):
    params = SamplingParams(temperature=0.0, logit_bias={"5": 3.0})
    assert sample_one(params, logits_with({5: 1.0, 1: rival})) == expected


@pytest.mark.parametrize(("rival", "expected"), [(1.9, 0), (2.1, 1)])
def test_logit_bias_is_applied_before_the_repetition_penalty(rival, expected):
    # (1.0 + 3.0) / 2 = 2.0; penalising first would give 1.0 / 2 + 3.0 = 3.5.
    params = SamplingParams(temperature=0.0, logit_bias={0: 3.0}, repetition_penalty=2.0)
    assert sample_one(params, logits_with({0: 1.0, 1: rival}), prompt=[0]) == expected


MIN_TOKENS_LOGITS = logits_with({2: 9.0, 3: 8.0, 4: 7.0})  # eos 2, stop token 3


def test_min_tokens_masks_eos_and_stop_token_ids_until_reached():
    params = SamplingParams(temperature=0.0, min_tokens=2, stop_token_ids=[3])
    eos = frozenset({2})
    assert sample_one(params, MIN_TOKENS_LOGITS, output=[9], eos=eos) == 4
    assert sample_one(params, MIN_TOKENS_LOGITS, output=[9, 9], eos=eos) == 2


def test_min_tokens_leaves_eos_alone_under_ignore_eos():
    params = SamplingParams(temperature=0.0, min_tokens=2, stop_token_ids=[3], ignore_eos=True)
    assert sample_one(params, MIN_TOKENS_LOGITS, eos=frozenset({2})) == 2


def test_processing_applies_per_row_only():
    logits = torch.stack([logits_with({0: 4.0, 1: 3.0})] * 2)
    rows = [
        make_row(SamplingParams(temperature=0.0, repetition_penalty=2.0), prompt=[0]),
        make_row(GREEDY, prompt=[0]),
    ]
    assert Sampler()(logits, rows).sampled_token_ids == [1, 0]


def test_sampler_does_not_modify_its_input_logits():
    logits = torch.randn(2, VOCAB, generator=torch.Generator().manual_seed(3))
    before = logits.clone()
    params = SamplingParams(logit_bias={0: 5.0}, repetition_penalty=1.5, top_k=4, min_tokens=1)
    Sampler()(logits, [make_row(params, prompt=[1], eos=frozenset({2})), make_row(GREEDY)])
    assert torch.equal(logits, before)


def _check_position(position, raw_logprobs: torch.Tensor, chosen: int, k: int) -> None:
    """`position` holds `chosen` and the raw top-k, with raw log_softmax values and ranks."""
    top = raw_logprobs.topk(k).indices.tolist()
    assert set(position) == {chosen, *top}
    for token_id, entry in position.items():
        assert entry.logprob == pytest.approx(raw_logprobs[token_id].item(), abs=1e-6)
        assert entry.rank == int((raw_logprobs > raw_logprobs[token_id]).sum()) + 1
        assert entry.decoded_token is None
    assert [position[t].rank for t in top] == list(range(1, k + 1))


def test_logprobs_are_raw_log_softmax_with_ranks():
    logits = torch.randn(4, VOCAB, generator=torch.Generator().manual_seed(4))
    # Row 0 is biased towards a low-ranked token; the logprobs still describe the raw logits.
    low = int(logits[0].argmin())
    params = [
        SamplingParams(temperature=0.0, logprobs=3, logit_bias={low: 1000.0}),
        SamplingParams(temperature=0.5, logprobs=5, seed=1),
        SamplingParams(),
        SamplingParams(temperature=0.0, logprobs=0),
    ]
    out = Sampler()(logits, [make_row(p) for p in params])
    raw = torch.log_softmax(logits, -1)
    assert out.sampled_token_ids[0] == low
    _check_position(out.logprobs[0], raw[0], low, 3)
    assert len(out.logprobs[0]) == 4 and out.logprobs[0][low].rank == VOCAB
    _check_position(out.logprobs[1], raw[1], out.sampled_token_ids[1], 5)
    assert out.logprobs[2] is None
    greedy_token = out.sampled_token_ids[3]
    assert list(out.logprobs[3]) == [greedy_token] and out.logprobs[3][greedy_token].rank == 1


def test_prompt_logprobs_give_the_next_prompt_token_and_the_top_k():
    logits = torch.randn(5, VOCAB, generator=torch.Generator().manual_seed(5))
    next_tokens = torch.tensor([3, 17, 0, 31, 8])
    positions = compute_prompt_logprobs(logits, next_tokens, num_logprobs=2)
    raw = torch.log_softmax(logits, -1)
    assert len(positions) == 5
    for t, position in enumerate(positions):
        _check_position(position, raw[t], int(next_tokens[t]), 2)
