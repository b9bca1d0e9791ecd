"""Rotary embedding frequencies against transformers' own rope initialisation functions."""

import pytest
import torch
import transformers
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from pagoda.layers.rotary import compute_inv_freq, rope_parameters

HEAD_DIM = 64
MAX_POSITION = 4096


def hf_config(rope: dict | None, max_position: int = MAX_POSITION) -> transformers.LlamaConfig:
    kwargs = dict(
        hidden_size=HEAD_DIM * 4,
        num_attention_heads=4,
        max_position_embeddings=max_position,
    )
    if rope is not None:
        kwargs["rope_parameters"] = {"rope_theta": 50000.0, **rope}
    return transformers.LlamaConfig(**kwargs)


def hf_inv_freq(config: transformers.LlamaConfig) -> tuple[torch.Tensor, float]:
    kind = config.rope_parameters["rope_type"]
    if kind == "default":
        fn = transformers.models.llama.modeling_llama.LlamaRotaryEmbedding
        return fn.compute_default_rope_parameters(config)
    return ROPE_INIT_FUNCTIONS[kind](config, torch.device("cpu"))


CASES = {
    "default": None,
    "linear": {"rope_type": "linear", "factor": 4.0},
    "llama3": {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 512,
    },
    # Qwen2.5 style: max_position_embeddings left at the pre-training length, factor given.
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096},
    # factor and the position ratio disagree: transformers uses the factor.
    "yarn_factor_wins": {
        "rope_type": "yarn",
        "factor": 2.0,
        "original_max_position_embeddings": 1024,
    },
    # no original length: transformers takes max_position_embeddings.
    "yarn_no_original": {"rope_type": "yarn", "factor": 8.0, "beta_fast": 16, "beta_slow": 2},
    "yarn_mscale": {
        "rope_type": "yarn",
        "factor": 40.0,
        "mscale": 1.0,
        "mscale_all_dim": 0.8,
        "original_max_position_embeddings": 4096,
    },
    "yarn_attention_factor": {
        "rope_type": "yarn",
        "factor": 4.0,
        "attention_factor": 0.7,
        "original_max_position_embeddings": 1024,
    },
}


@pytest.mark.parametrize("case", list(CASES))
def test_inv_freq_and_attention_factor_match_transformers(case: str) -> None:
    """For every supported rope type, pagoda's inverse frequencies and cos/sin scale equal the
    ones transformers computes from the same config."""
    config = hf_config(CASES[case])
    params = rope_parameters(config)
    inv_freq, scale = compute_inv_freq(HEAD_DIM, params, config.max_position_embeddings)
    ref_inv_freq, ref_scale = hf_inv_freq(config)
    assert params["rope_type"] == config.rope_parameters["rope_type"]
    torch.testing.assert_close(inv_freq, ref_inv_freq.float(), rtol=1e-6, atol=0)
    assert scale == pytest.approx(ref_scale, rel=1e-6)


def test_rope_parameters_reads_legacy_rope_scaling_and_theta() -> None:
    """A transformers-4 style config (rope_theta plus rope_scaling with the old "type" key) gives
    the same rope settings as the transformers-5 rope_parameters dict."""

    class Legacy:
        rope_theta = 500000.0
        rope_scaling = {"type": "linear", "factor": 2.0}

    params = rope_parameters(Legacy())
    assert params["rope_type"] == "linear"
    assert params["rope_theta"] == 500000.0
    assert params["factor"] == 2.0
    inv_freq, scale = compute_inv_freq(HEAD_DIM, params, 2048)
    ref, ref_scale = hf_inv_freq(
        hf_config({"rope_type": "linear", "factor": 2.0, "rope_theta": 500000.0})
    )
    torch.testing.assert_close(inv_freq, ref)
    assert scale == ref_scale


def test_rope_parameters_default_when_config_has_none() -> None:
    """A config without any rope settings is plain rope with theta 10000."""

    class Bare:
        pass

    params = rope_parameters(Bare())
    assert params["rope_type"] == "default"
    assert params["rope_theta"] == 10000.0


def test_unsupported_rope_type_is_an_error_naming_it() -> None:
    """An unknown rope type fails loudly rather than silently using plain rope."""
    with pytest.raises(ValueError, match="longrope"):
        compute_inv_freq(HEAD_DIM, {"rope_type": "longrope", "rope_theta": 10000.0}, 2048)
