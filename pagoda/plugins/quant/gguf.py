"""``--quantization gguf``: linear layers that keep a GGUF file's quantized blocks.

The GGUF loader dequantizes every tensor to the model's dtype, so any layer runs as an
unquantized one; a tensor of a block type the CPU kernel takes (Q4_1, Q8_0) also keeps its
blocks, and float32 CPU batches of up to :data:`MAX_ROWS` rows are then computed from them
(:mod:`pagoda.kernels.cpu_gguf_linear`): a decode step reads 4-6x fewer weight bytes. Larger
batches (prefills), other block types, bfloat16 and CUDA use the dequantized weight.
"""

from __future__ import annotations

import torch
from torch import nn

from pagoda.interfaces.quant import GGUFBlocks
from pagoda.kernels import cpu_gguf_linear
from pagoda.layers.linear import UnquantizedLinearMethod

# Rows up to which the block kernel beats oneDNN on the dequantized float32 weight (the
# default model's decode step, 2 cores: 1.6x at 36 rows, 1.1x at 256, even at 512; docs/perf.md).
MAX_ROWS = 256


class GGUFLinearMethod(UnquantizedLinearMethod):
    """An unquantized linear layer that also keeps its weight's GGUF blocks, packed for the
    CPU kernel, as ``layer.gguf_weight`` (None where the kernel cannot take them)."""

    def process_weights_after_loading(self, layer: nn.Module) -> None:
        super().process_weights_after_loading(layer)
        layer.gguf_weight = _pack(layer)

    def apply(
        self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        packed = getattr(layer, "gguf_weight", None)
        if packed is not None and cpu_gguf_linear.supports(x) and x.shape[0] <= MAX_ROWS:
            return cpu_gguf_linear.linear(x, packed, bias)
        return super().apply(layer, x, bias)


def _pack(layer: nn.Module) -> cpu_gguf_linear.PackedGGUFWeight | None:
    """The layer's blocks in the kernel's layout, if every part of the (possibly fused) weight
    came from the file in one block type the kernel takes and the model runs float32 on the
    CPU."""
    weight = layer.weight
    blocks: dict[int, GGUFBlocks] = getattr(weight, "source_blocks", {})
    parts = len(getattr(layer, "output_partition_sizes", [weight.shape[0]]))
    if (
        weight.device.type != "cpu"
        or weight.dtype != torch.float32
        or sorted(blocks) != list(range(parts))
        or len({b.type_name for b in blocks.values()}) != 1
        or cpu_gguf_linear.load() is None
    ):
        return None
    raw = torch.cat([blocks[i].raw for i in range(parts)])
    packed = cpu_gguf_linear.pack(raw, blocks[0].type_name)
    if packed is None or (packed.out_features, packed.in_features) != tuple(weight.shape):
        return None
    return packed


class GGUFQuantMethod:
    """The ``gguf`` quantization method: every linear layer, the LM head included, gets a
    :class:`GGUFLinearMethod`."""

    def __init__(self, hf_quant_config: dict | None) -> None:
        self.linear_method = GGUFLinearMethod()

    def get_linear_method(self, prefix: str) -> GGUFLinearMethod:
        return self.linear_method
