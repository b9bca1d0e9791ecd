"""Linear layers whose weights are created and applied by a quantization method.

Each layer knows its input and output partition sizes (equal to the full sizes on one
device), and each weight parameter carries a ``weight_loader`` so fused projections (QKV,
gate-up) load from checkpoints that store their parts separately.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn


class LinearMethod(Protocol):
    """How a linear layer's weights are created, post-processed and applied (vLLM's names)."""

    def create_weights(
        self,
        layer: nn.Module,
        input_size_per_partition: int,
        output_partition_sizes: list[int],
        input_size: int,
        output_size: int,
        params_dtype: torch.dtype,
        **extra: Any,
    ) -> None: ...

    def process_weights_after_loading(self, layer: nn.Module) -> None: ...

    def apply(
        self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor: ...


def keep_source_blocks(param: nn.Parameter, shard: int, loaded: torch.Tensor) -> None:
    """Keep a quantized checkpoint tensor's original blocks for the quantization method.

    A loader that dequantizes (the GGUF one) may attach the tensor's blocks as
    ``loaded.source_blocks``; they are kept as ``param.source_blocks[shard]`` (shard: the index
    of the part of a fused layer, 0 otherwise) until the method's
    ``process_weights_after_loading``, after which the loader drops what is left."""
    blocks = getattr(loaded, "source_blocks", None)
    if blocks is not None:
        if not hasattr(param, "source_blocks"):
            param.source_blocks = {}  # type: ignore[attr-defined]
        param.source_blocks[shard] = blocks  # type: ignore[attr-defined]


def default_weight_loader(param: nn.Parameter, loaded: torch.Tensor) -> None:
    if param.shape != loaded.shape:
        raise ValueError(
            f"shape mismatch: parameter {tuple(param.shape)}, checkpoint {tuple(loaded.shape)}"
        )
    param.data.copy_(loaded)
    keep_source_blocks(param, 0, loaded)


_MIN_REORDERED_ROWS = 4


class UnquantizedLinearMethod:
    """Plain ``x @ W.T + b`` in the model's dtype.

    On the CPU, float32 and bf16 weights are also reordered once after loading into oneDNN's
    blocked layout (``torch.ops.mkldnn._reorder_linear_weight``), which 2-D inputs of at
    least 4 rows then use: ``F.linear`` re-packs the weight on every call, which costs most at
    decode batch sizes (the default model's float32 decode step: -20% at batch 4, -14% at 16,
    -7% at 64), while for 1-3 rows its matrix-vector path is faster (30 against 36 ms at
    batch 1; see docs/perf.md). The reordered copy is kept beside the plain weight.

    On CUDA, half-precision inputs of at most ``triton_gemv.MAX_ROWS`` rows (decode batches)
    run the Triton GEMV, which streams the weight at memory bandwidth where cuBLAS picks
    split-K kernels (docs/perf.md).
    """

    def create_weights(
        self,
        layer: nn.Module,
        input_size_per_partition: int,
        output_partition_sizes: list[int],
        input_size: int,
        output_size: int,
        params_dtype: torch.dtype,
        **extra: Any,
    ) -> None:
        weight = nn.Parameter(
            torch.empty(sum(output_partition_sizes), input_size_per_partition, dtype=params_dtype),
            requires_grad=False,
        )
        layer.register_parameter("weight", weight)

    def process_weights_after_loading(self, layer: nn.Module) -> None:
        weight = layer.weight
        # Set on every layer (None: not reordered), so ``apply`` finds it as a plain attribute.
        layer.mkldnn_weight = None
        if (
            weight.device.type == "cpu"
            and weight.dtype in (torch.float32, torch.bfloat16)
            and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
        ):
            layer.mkldnn_weight = torch.ops.mkldnn._reorder_linear_weight(weight.data)

    def apply(
        self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        reordered = getattr(layer, "mkldnn_weight", None)
        if (
            reordered is not None
            and x.dim() == 2
            and x.shape[0] >= _MIN_REORDERED_ROWS
            and x.dtype == reordered.dtype
        ):
            return torch.ops.mkldnn._linear_pointwise(x, reordered, bias, "none", [], "")
        if x.is_cuda:
            from pagoda.kernels import triton_gemv

            if triton_gemv.supports(x, layer.weight):
                return triton_gemv.gemv(x, layer.weight, bias)
        return F.linear(x, layer.weight, bias)


class LinearBase(nn.Module):
    """A linear layer of ``input_size -> sum(output_partition_sizes)`` on this device."""

    def __init__(
        self,
        input_size: int,
        output_partition_sizes: list[int],
        bias: bool,
        params_dtype: torch.dtype,
        linear_method: LinearMethod | None = None,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.input_size_per_partition = input_size
        self.output_partition_sizes = output_partition_sizes
        self.output_size = sum(output_partition_sizes)
        self.output_size_per_partition = self.output_size
        self.linear_method: LinearMethod = linear_method or UnquantizedLinearMethod()
        self.linear_method.create_weights(
            self,
            self.input_size_per_partition,
            output_partition_sizes,
            input_size,
            self.output_size,
            params_dtype,
        )
        if bias:
            self.bias = nn.Parameter(
                torch.zeros(self.output_size_per_partition, dtype=params_dtype), requires_grad=False
            )
        else:
            self.register_parameter("bias", None)
        for param in self.parameters(recurse=False):
            param.weight_loader = self.weight_loader  # type: ignore[attr-defined]

    def weight_loader(
        self, param: nn.Parameter, loaded: torch.Tensor, shard_id: Any = None
    ) -> None:
        if shard_id is None:
            default_weight_loader(param, loaded)
            return
        index = self.shard_index(shard_id)
        start = sum(self.output_partition_sizes[:index])
        size = self.output_partition_sizes[index]
        target = param.data.narrow(0, start, size)
        if target.shape != loaded.shape:
            raise ValueError(
                f"shard {shard_id!r}: expected {tuple(target.shape)}, "
                f"checkpoint {tuple(loaded.shape)}"
            )
        target.copy_(loaded)
        keep_source_blocks(param, index, loaded)

    def shard_index(self, shard_id: Any) -> int:
        raise ValueError(f"{type(self).__name__} has no shards (got shard {shard_id!r})")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_method.apply(self, x, self.bias)


class ReplicatedLinear(LinearBase):
    """A linear layer whose weight is whole on every device."""

    def __init__(
        self,
        input_size: int,
        output_size: int,
        bias: bool,
        params_dtype: torch.dtype,
        linear_method: LinearMethod | None = None,
    ) -> None:
        super().__init__(input_size, [output_size], bias, params_dtype, linear_method)


# On one device column- and row-parallel layers hold the whole matrix; the names say how
# they will be split under tensor parallelism (output dim vs input dim).
ColumnParallelLinear = ReplicatedLinear
RowParallelLinear = ReplicatedLinear


class MergedColumnParallelLinear(LinearBase):
    """Several projections of the same input fused into one (e.g. gate and up); shards 0, 1, ..."""

    def __init__(
        self,
        input_size: int,
        output_sizes: list[int],
        bias: bool,
        params_dtype: torch.dtype,
        linear_method: LinearMethod | None = None,
    ) -> None:
        super().__init__(input_size, list(output_sizes), bias, params_dtype, linear_method)

    def shard_index(self, shard_id: Any) -> int:
        return int(shard_id)


class QKVParallelLinear(LinearBase):
    """The fused query, key and value projection; shards "q", "k", "v"."""

    def __init__(
        self,
        hidden_size: int,
        head_dim: int,
        num_heads: int,
        num_kv_heads: int,
        bias: bool,
        params_dtype: torch.dtype,
        linear_method: LinearMethod | None = None,
    ) -> None:
        self.q_size = num_heads * head_dim
        self.kv_size = num_kv_heads * head_dim
        super().__init__(
            hidden_size,
            [self.q_size, self.kv_size, self.kv_size],
            bias,
            params_dtype,
            linear_method,
        )

    def shard_index(self, shard_id: Any) -> int:
        return {"q": 0, "k": 1, "v": 2}[shard_id]
