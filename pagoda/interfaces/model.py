"""The contract a model plugin implements."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from pagoda.layers.linear import LinearMethod


@dataclass(slots=True)
class ModelContext:
    """What a model's constructor receives.

    ``linear_method(prefix)`` gives the quantization method of the linear layer at ``prefix``
    (the unquantized one unless a quant plugin is active).
    """

    hf_config: Any
    dtype: torch.dtype
    linear_method: Callable[[str], LinearMethod]


@runtime_checkable
class CausalLM(Protocol):
    """A generative model. It knows nothing of scheduling: attention layers read the paged
    KV cache through the forward context (:mod:`pagoda.layers.attention`)."""

    def __init__(self, ctx: ModelContext) -> None: ...

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Hidden states [num_tokens, hidden] for a flat batch of tokens of many requests."""
        ...

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Logits [n, vocab] for the rows of hidden states that need sampling."""
        ...

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """Load (HF parameter name, tensor) pairs; return the names of parameters loaded."""
        ...
