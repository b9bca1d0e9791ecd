"""The contract a quantization plugin implements (vLLM's ``QuantizationConfig``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from pagoda.layers.linear import LinearMethod


@runtime_checkable
class QuantMethod(Protocol):
    """A quantization scheme, registered by ``--quantization`` name through
    ``register_quant_methods``. The engine builds one per model from the checkpoint's
    quantization config and asks it for each linear layer's :class:`LinearMethod`, which
    creates the layer's weights, post-processes them after loading and applies the layer."""

    def __init__(self, hf_quant_config: dict | None) -> None: ...

    def get_linear_method(self, prefix: str) -> LinearMethod:
        """The method of the linear layer at ``prefix`` (e.g. ``model.layers.0.mlp.down_proj``,
        ``lm_head``)."""
        ...


@dataclass(frozen=True, slots=True)
class GGUFBlocks:
    """A quantized GGUF tensor as stored, which the GGUF loader attaches to the dequantized
    tensor as ``source_blocks`` (kept per shard on the parameter by
    :func:`pagoda.layers.linear.keep_source_blocks`): its block type's name (``"Q4_1"``,
    ``"Q8_0"``, ...) and its raw bytes [rows, bytes per row], rows in the HF weight's order."""

    type_name: str
    raw: torch.Tensor
