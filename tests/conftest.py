"""Shared fixtures: the default model's tokenizer as a plain HF directory."""

from pathlib import Path

import pytest
from tiny_models import save_default_tokenizer


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default model's tokenizer (from its GGUF file), saved once per session."""
    return save_default_tokenizer(tmp_path_factory.mktemp("tokenizer"))
