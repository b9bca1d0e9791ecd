"""Public contracts for plugin authors: models, attention backends (and later quantization,
tool parsers, reasoning parsers and guided-decoding backends)."""

from pagoda.interfaces.attention import AttentionBackend
from pagoda.interfaces.model import CausalLM, ModelContext
from pagoda.layers.attention_metadata import AttentionMetadata
from pagoda.layers.linear import LinearMethod

__all__ = ["AttentionBackend", "AttentionMetadata", "CausalLM", "LinearMethod", "ModelContext"]
