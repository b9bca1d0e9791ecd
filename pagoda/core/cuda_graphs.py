"""CUDA graphs for decode steps: one graph per bucketed batch size, replayed over the
persistent input buffers of :class:`pagoda.core.device_inputs.DeviceInputs`.

A decode-only step of ``n`` requests replays the graph of the smallest captured size
``b >= n``; rows ``n..b`` are padding (slot -1, so no KV write; context length 1 over block 0,
whose output is ignored). Everything a graph reads is a fixed slice of the persistent
buffers, written by the step's host-to-device copy before the replay; the attention
backend's per-step metadata is bound to those slices at capture time instead of being
rebuilt by ``prepare``. Only the model's forward pass is captured: logits and sampling run
eagerly on the graph's output rows ``0..n`` (the LM head is run once per size at capture
so that its kernels are compiled before the first request).
"""

from __future__ import annotations

import bisect
import logging
import time

import torch
from torch import nn

from pagoda.core.device_inputs import DeviceInputs, PreviousSample
from pagoda.core.scheduler import SchedulerOutput
from pagoda.layers.attention_metadata import AttentionMetadata
from pagoda.layers.forward_context import ForwardContext, forward_context

logger = logging.getLogger("pagoda")

MAX_CAPTURE_SIZE = 512


def capture_sizes(max_batch: int) -> list[int]:
    """1, 2, 4, 8, then every multiple of 16, up to ``max_batch`` (itself included)."""
    limit = min(max_batch, MAX_CAPTURE_SIZE)
    sizes = [s for s in (1, 2, 4, 8) if s <= limit]
    sizes += list(range(16, limit + 1, 16))
    if limit not in sizes:
        sizes.append(limit)
    return sorted(sizes)


def supports_graphs(backend: object) -> bool:
    """Whether the attention backend's forward pass can be captured: it must read the step's
    sequence lengths from ``backend_data["seq_lens"]`` (a device tensor) and make no host
    syncs, as TritonAttentionBackend does; its KV-split count must depend on the batch size
    only (``decode_num_splits``)."""
    return hasattr(backend, "decode_num_splits")


class CUDAGraphRunner:
    """Captures ``model``'s forward pass for decode batches and replays it."""

    def __init__(
        self, model: nn.Module, backend: object, inputs: DeviceInputs, max_batch: int
    ) -> None:
        self.model = model
        self.backend = backend
        self.inputs = inputs
        self.sizes = capture_sizes(max_batch)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor] = {}

    @property
    def max_batch(self) -> int:
        return self.sizes[-1]

    def can_run(self, sched: SchedulerOutput) -> bool:
        """Decode-only steps within the largest captured size; no prompt logprobs (those come
        from prefill chunks, which never replay)."""
        n = len(sched.scheduled)
        return sched.num_decodes == n and 0 < n <= self.max_batch

    def _meta(self, n: int, qsl: list[int], seq_lens: list[int]) -> AttentionMetadata:
        inputs = self.inputs
        meta = AttentionMetadata(
            num_decodes=n,
            query_start_loc=qsl,
            seq_lens=seq_lens,
            slot_mapping=inputs.slot_mapping[:n],
            block_tables=inputs.block_tables[:n],
            block_size=inputs.block_size,
            max_seq_len=max(seq_lens),
        )
        # Bound here instead of by backend.prepare (which would build it on the host).
        meta.backend_data["seq_lens"] = inputs.seq_lens[:n]
        meta.backend_data["prefill_start"] = n
        return meta

    @torch.inference_mode()
    def capture(self) -> None:
        """Capture every size, largest first, into one shared memory pool."""
        start = time.perf_counter()
        inputs = self.inputs
        biggest = self.sizes[-1]
        empty = SchedulerOutput()
        inputs.stage(empty, pad_to=biggest)
        inputs.copy_to_device()
        pool = torch.cuda.graph_pool_handle()
        for size in reversed(self.sizes):
            meta = self._meta(size, list(range(size + 1)), [1] * size)
            ids, pos = inputs.input_ids[:size], inputs.positions[:size]
            with forward_context(ForwardContext(meta, self.backend)):
                hidden = self.model(ids, pos)  # compiles this shape's kernels outside the capture
                # The LM head runs eagerly on every replay's rows; its kernels for this row
                # count compile here too, not in the middle of the first run that meets it.
                self.model.compute_logits(hidden)
                torch.cuda.synchronize()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool):
                    out = self.model(ids, pos)
            self.graphs[size] = graph
            self.outputs[size] = out
        torch.cuda.synchronize()
        logger.info(
            "captured CUDA graphs for %d decode batch sizes (1..%d) in %.1f s",
            len(self.sizes),
            biggest,
            time.perf_counter() - start,
        )

    def run(
        self, sched: SchedulerOutput, previous: PreviousSample | None = None
    ) -> tuple[torch.Tensor, AttentionMetadata]:
        """Replay the step (pending input tokens come from ``previous``); returns the hidden
        states of its rows and its metadata."""
        n = len(sched.scheduled)
        size = self.sizes[bisect.bisect_left(self.sizes, n)]
        qsl, seq_lens = self.inputs.stage(sched, pad_to=size, previous=previous)
        self.inputs.copy_to_device()
        self.graphs[size].replay()
        return self.outputs[size][:n], self._meta(n, qsl, seq_lens)
