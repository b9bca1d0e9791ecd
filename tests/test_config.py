"""Engine config checks that need a model's config.json: the context limit."""

from __future__ import annotations

from pathlib import Path

import pytest
import transformers

from pagoda.config import ALLOW_LONG_MAX_MODEL_LEN_ENV, EngineConfig


def _model_dir(path: Path, **config: object) -> str:
    transformers.LlamaConfig(
        hidden_size=64, num_attention_heads=4, num_hidden_layers=1, **config
    ).save_pretrained(path)
    return str(path)


def _finalize(model: str, max_model_len: int | None) -> EngineConfig:
    return EngineConfig.from_kwargs(model=model, max_model_len=max_model_len).finalize()


def test_max_model_len_defaults_to_and_stops_at_max_position_embeddings(tmp_path: Path) -> None:
    model = _model_dir(tmp_path, max_position_embeddings=1024)
    assert _finalize(model, None).model.max_model_len == 1024
    assert _finalize(model, 1024).model.max_model_len == 1024
    with pytest.raises(ValueError, match=r"max_model_len 1025 is longer than the model's 1024 "):
        _finalize(model, 1025)


def test_yarn_scaling_extends_the_limit_by_its_factor(tmp_path: Path) -> None:
    # Qwen2.5's long-context recipe: positions left at the pre-training length, factor given.
    rope = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 1024}
    model = _model_dir(tmp_path, max_position_embeddings=1024, rope_scaling=rope)
    assert _finalize(model, None).model.max_model_len == 1024  # the default stays
    assert _finalize(model, 4096).model.max_model_len == 4096
    with pytest.raises(ValueError, match=r"4096 \(1024 positions x yarn factor 4.0\)"):
        _finalize(model, 4097)


def test_llama3_scaling_does_not_extend_the_limit(tmp_path: Path) -> None:
    # Llama 3.1 states its long length in max_position_embeddings already.
    rope = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 256,
    }
    model = _model_dir(tmp_path, max_position_embeddings=2048, rope_scaling=rope)
    with pytest.raises(ValueError, match="longer than the model's 2048"):
        _finalize(model, 2049)


def test_the_environment_can_allow_a_longer_max_model_len(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _model_dir(tmp_path, max_position_embeddings=1024)
    monkeypatch.setenv(ALLOW_LONG_MAX_MODEL_LEN_ENV, "1")
    assert _finalize(model, 8192).model.max_model_len == 8192
