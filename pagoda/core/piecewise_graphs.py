"""CUDA graphs for steps with prefill chunks: the forward pass captured in pieces between its
attention calls, one set of pieces per bucketed token count, with attention run eagerly
between the replays.

An eager forward pass of a large model is hundreds of kernel launches from Python (about
21 ms for the Llama-3.1-8B shape on an H100), longer than the GPU needs for a step of a few
hundred tokens. Attention cannot be captured here (its launch grid follows the batch's
prefill lengths); everything between two attention calls can, at a fixed row count:

    piece 0: embedding, layer 0 up to its q, k, v      -> attention of layer 0 (eager)
    piece 1: o_proj of layer 0 ... q, k, v of layer 1  -> attention of layer 1 (eager)
    ...
    piece L: o_proj of the last layer, the final norm  -> hidden states

A step of ``n`` tokens replays the pieces of the smallest captured size ``b >= n``. Rows
``n..b`` are padding: their ids and positions are whatever the persistent input buffers
hold there (valid values of earlier steps), their attention output is never written, and
nothing reads their results. Pieces hand q, k and v to the eager attention, and take its
output back, through persistent buffers, so the graphs' shared memory pool holds no tensor
between steps; the last piece copies the hidden states into a persistent buffer too.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Callable

import torch
from torch import nn

from pagoda.core.device_inputs import DeviceInputs
from pagoda.layers.attention import Attention
from pagoda.layers.forward_context import ForwardContext, forward_context

logger = logging.getLogger("pagoda")

# Larger steps run eagerly: their GPU time dwarfs the launches (an 8B step of 2,048 tokens
# computes for ~40 ms on an H100), and the pieces' copies of q, k, v and the attention output
# cost more than the launches save (the nano-vllm recipe's 16,384-token steps: -1.5%).
MAX_TOKENS = 2048


def piecewise_sizes(max_tokens: int, smallest: int = 64) -> list[int]:
    """Token counts to capture: multiples of 64 up to 1,024, then of 128, and ``max_tokens``
    itself. Padding a step to its size adds at most an eighth above 512 tokens, where steps
    compute rather than stream weights and padding costs time."""
    sizes = list(range(smallest, min(max_tokens, 1024 + 1), 64))
    sizes += range(1024 + 128, max_tokens, 128)
    return [s for s in sizes if s < max_tokens] + [max_tokens]


class PiecewiseGraphRunner:
    """Captures ``model``'s forward pass in pieces between attention calls and replays them
    for steps of up to ``max_tokens`` (at most MAX_TOKENS) tokens that the decode graphs do
    not take."""

    def __init__(
        self, model: nn.Module, backend: object, inputs: DeviceInputs, max_tokens: int
    ) -> None:
        self.model = model
        self.backend = backend
        self.inputs = inputs
        self.sizes = piecewise_sizes(min(max_tokens, MAX_TOKENS))
        self.pieces: dict[int, list[torch.cuda.CUDAGraph]] = {}
        self.layers: list[Attention] = []  # the attention between piece i and piece i + 1
        layer = next(m for m in model.modules() if isinstance(m, Attention))
        kv = layer.num_kv_heads * layer.head_dim
        self.shape = (layer.num_heads, layer.num_kv_heads, layer.head_dim)
        param = next(model.parameters())
        rows, opts = self.max_tokens, {"dtype": param.dtype, "device": param.device}
        self.q = torch.zeros(rows, layer.num_heads * layer.head_dim, **opts)
        self.k = torch.zeros(rows, kv, **opts)
        self.v = torch.zeros(rows, kv, **opts)
        self.attn_out = torch.zeros(rows, layer.num_heads * layer.head_dim, **opts)
        self.hidden: torch.Tensor | None = None  # [max_tokens, hidden], made by the first capture

    @property
    def max_tokens(self) -> int:
        return self.sizes[-1]

    def can_run(self, num_tokens: int) -> bool:
        return 0 < num_tokens <= self.max_tokens

    @torch.inference_mode()
    def capture(self) -> None:
        """Capture every size, largest first, into one shared memory pool."""
        start = time.perf_counter()
        pool = torch.cuda.graph_pool_handle()
        stream = torch.cuda.Stream()
        for size in reversed(self.sizes):
            self.pieces[size] = self._capture_size(size, pool, stream)
        logger.info(
            "captured piecewise CUDA graphs for %d step sizes (%d..%d tokens, %d pieces each) "
            "in %.1f s",
            len(self.sizes),
            self.sizes[0],
            self.max_tokens,
            len(self.layers) + 1,
            time.perf_counter() - start,
        )

    def _capture_size(
        self, size: int, pool: tuple[int, int], stream: torch.cuda.Stream
    ) -> list[torch.cuda.CUDAGraph]:
        ids, pos = self.inputs.input_ids[:size], self.inputs.positions[:size]
        # An eager pass first (attention skipped) compiles this size's kernels and sets up
        # cuBLAS outside the capture.
        self._run_pieces(ids, pos, lambda: None)
        torch.cuda.synchronize()
        pieces: list[torch.cuda.CUDAGraph] = []

        def next_piece() -> None:
            if pieces:
                pieces[-1].capture_end()
            pieces.append(torch.cuda.CUDAGraph())
            pieces[-1].capture_begin(pool=pool)

        with torch.cuda.stream(stream):
            next_piece()
            self._run_pieces(ids, pos, next_piece)
            pieces[-1].capture_end()
        torch.cuda.synchronize()
        return pieces

    def _run_pieces(
        self, ids: torch.Tensor, pos: torch.Tensor, between: Callable[[], None]
    ) -> None:
        """The forward pass with each attention call replaced by: q, k, v into the persistent
        buffers, ``between()`` (which ends one capture and begins the next), and the
        persistent attention output as its result."""
        n = ids.shape[0]
        layers: list[Attention] = []

        def split(layer: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
            self.q[:n].view_as(q).copy_(q)
            self.k[:n].view_as(k).copy_(k)
            self.v[:n].view_as(v).copy_(v)
            between()
            layers.append(layer)
            return self.attn_out[:n]

        with forward_context(ForwardContext(None, self.backend, split)):
            hidden = self.model(ids, pos)
        if self.hidden is None:
            self.hidden = torch.empty(
                self.max_tokens, hidden.shape[1], dtype=hidden.dtype, device=hidden.device
            )
        self.hidden[:n].copy_(hidden)
        self.layers = layers

    def forward(self, ctx: ForwardContext, num_tokens: int) -> torch.Tensor:
        """The hidden states of a step whose inputs are staged in the persistent buffers and
        whose metadata (``ctx.meta``) the backend has prepared: the pieces of its size, with
        the attention of its real rows between them."""
        n = num_tokens
        pieces = self.pieces[self.sizes[bisect.bisect_left(self.sizes, n)]]
        heads, kv_heads, d = self.shape
        q = self.q[:n].view(n, heads, d)
        k = self.k[:n].view(n, kv_heads, d)
        v = self.v[:n].view(n, kv_heads, d)
        for piece, layer in zip(pieces, self.layers, strict=False):
            piece.replay()
            self.attn_out[:n].copy_(layer.attend(ctx, q, k, v))
        pieces[-1].replay()
        assert self.hidden is not None
        return self.hidden[:n]
