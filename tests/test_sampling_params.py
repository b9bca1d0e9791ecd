"""SamplingParams: vLLM's defaults, validation that names the field, normalisation."""

import math

import pytest

from pagoda.sampling_params import SamplingParams, SamplingType


def test_defaults_match_vllm():
    p = SamplingParams()
    assert (p.n, p.temperature, p.top_p, p.top_k, p.min_p) == (1, 1.0, 1.0, 0, 0.0)
    assert (p.presence_penalty, p.frequency_penalty, p.repetition_penalty) == (0.0, 0.0, 1.0)
    assert p.max_tokens == 16 and p.min_tokens == 0
    assert p.seed is None and p.logprobs is None and p.prompt_logprobs is None
    assert p.stop == [] and p.stop_token_ids == [] and p.logit_bias is None
    assert p.skip_special_tokens and p.spaces_between_special_tokens
    assert not p.include_stop_str_in_output and not p.ignore_eos


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n", 0),
        ("temperature", -0.1),
        ("temperature", math.nan),
        ("top_p", 0.0),
        ("top_p", 1.5),
        ("top_k", -2),
        ("min_p", -0.1),
        ("min_p", 1.1),
        ("presence_penalty", 2.5),
        ("presence_penalty", -2.5),
        ("frequency_penalty", 2.5),
        ("frequency_penalty", -2.5),
        ("repetition_penalty", 0.0),
        ("max_tokens", 0),
        ("min_tokens", -1),
        ("logprobs", -1),
        ("prompt_logprobs", -1),
        ("seed", 1.5),
        ("seed", "7"),
        ("stop", ["ok", 3]),
        ("stop_token_ids", [-1]),
        ("logit_bias", {"abc": 1.0}),
    ],
)
def test_out_of_range_value_raises_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"^{field} "):
        SamplingParams(**{field: value})


def test_min_tokens_above_max_tokens_raises():
    with pytest.raises(ValueError, match="min_tokens"):
        SamplingParams(min_tokens=5, max_tokens=4)
    assert SamplingParams(min_tokens=5, max_tokens=None).min_tokens == 5


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("top_k", -1),
        ("top_p", 1.0),
        ("min_p", 1.0),
        ("presence_penalty", -2.0),
        ("frequency_penalty", 2.0),
        ("max_tokens", None),
        ("logprobs", 0),
        ("seed", 0),
    ],
)
def test_range_boundaries_are_accepted(field, value):
    SamplingParams(**{field: value})


def test_stop_string_becomes_list():
    assert SamplingParams(stop="END").stop == ["END"]
    assert SamplingParams(stop=("a", "b")).stop == ["a", "b"]


def test_stop_token_ids_become_list():
    assert SamplingParams(stop_token_ids=(3, 4)).stop_token_ids == [3, 4]


def test_logit_bias_json_string_keys_become_ints():
    p = SamplingParams(logit_bias={"12": 5, 7: -1.5})
    assert p.logit_bias == {12: 5.0, 7: -1.5}
    assert all(type(k) is int and type(v) is float for k, v in p.logit_bias.items())


def test_top_k_minus_one_means_disabled():
    assert SamplingParams(top_k=-1).top_k == 0


def test_zero_temperature_is_greedy_and_disables_truncation():
    p = SamplingParams(temperature=0.0, top_k=5, top_p=0.5, min_p=0.2)
    assert p.is_greedy and p.sampling_type is SamplingType.GREEDY
    assert (p.top_k, p.top_p, p.min_p) == (0, 1.0, 0.0)


def test_greedy_threshold_is_1e_minus_5():
    assert SamplingParams(temperature=9e-6).is_greedy
    assert not SamplingParams(temperature=1e-5).is_greedy


def test_sampling_type_random_and_seeded():
    assert SamplingParams().sampling_type is SamplingType.RANDOM
    assert SamplingParams(seed=3).sampling_type is SamplingType.RANDOM_SEED
    assert SamplingParams(temperature=0.0, seed=3).sampling_type is SamplingType.GREEDY


def test_clone_is_deep():
    p = SamplingParams(stop=["x"], stop_token_ids=[1], logit_bias={1: 1.0})
    c = p.clone()
    assert c == p
    c.stop.append("y")
    c.stop_token_ids.append(2)
    c.logit_bias[2] = 2.0
    assert p.stop == ["x"] and p.stop_token_ids == [1] and p.logit_bias == {1: 1.0}


def test_child_params_offset_seed_by_index_and_set_n_to_one():
    p = SamplingParams(n=3, seed=100, temperature=0.7)
    children = [p.child_params(i) for i in range(3)]
    assert [c.seed for c in children] == [100, 101, 102]
    assert all(c.n == 1 and c.temperature == 0.7 for c in children)
    assert p.n == 3 and p.seed == 100


def test_unseeded_children_stay_unseeded():
    assert SamplingParams(n=2).child_params(1).seed is None


def test_child_index_out_of_range_raises():
    with pytest.raises(ValueError, match="index"):
        SamplingParams(n=2).child_params(2)


def test_verify_vocab_rejects_ids_outside_vocabulary():
    SamplingParams(logit_bias={9: 1.0}, stop_token_ids=[9]).verify_vocab(10)
    with pytest.raises(ValueError, match="logit_bias"):
        SamplingParams(logit_bias={10: 1.0}).verify_vocab(10)
    with pytest.raises(ValueError, match="stop_token_ids"):
        SamplingParams(stop_token_ids=[10]).verify_vocab(10)
