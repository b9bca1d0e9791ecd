"""The loop every model's ``load_weights`` shares: map each checkpoint name to a parameter
(and a shard of a fused one), then hand the tensor to that parameter's ``weight_loader``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from pagoda.layers.linear import default_weight_loader

# checkpoint name -> (parameter name, shard id or None), or (None, None) to skip the tensor
NameMap = Callable[[str], tuple[str | None, Any]]


def load_mapped_weights(
    model: nn.Module, weights: Iterable[tuple[str, torch.Tensor]], map_name: NameMap
) -> set[str]:
    """Load ``weights`` into ``model``; return the names of the parameters loaded."""
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded: set[str] = set()
    for name, tensor in weights:
        target, shard = map_name(name)
        if target is None:
            continue
        if target not in params:
            raise ValueError(
                f"checkpoint tensor {name!r} matches no parameter of {type(model).__name__}"
            )
        param = params[target]
        loader = getattr(param, "weight_loader", default_weight_loader)
        if shard is None:
            loader(param, tensor)
        else:
            loader(param, tensor, shard)
        loaded.add(target)
    return loaded
