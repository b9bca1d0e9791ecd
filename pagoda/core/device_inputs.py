"""Step inputs on an accelerator: persistent device buffers filled from pinned host staging.

Every step's flat batch (input ids, positions, slot mapping, block tables, sequence lengths)
is written on the host into pinned buffers through numpy views, then copied to persistent
device buffers with two non-blocking copies; nothing here waits for the device. The device
buffers never move, so CUDA graphs captured over slices of them (pagoda.core.cuda_graphs)
read each step's inputs without another copy::

    host (pinned)                        device (persistent)
    tok64 [4, max_tokens] int64     ──►  input_ids | positions | slot_mapping | pending_src
    req32 [R * (1 + max_blocks)]    ──►  seq_lens [R] | block_tables [R, max_blocks]
                                         (R = max_reqs)

Under async scheduling a decode's input token may still be on the device (sampled by the
previous step, not yet read back): its ``pending_src`` entry is that token's row in the
previous step's sampled tensor, and a gather on the device fills it in before the forward pass.

Every device view is contiguous along its last dimension (the kernels index seq_lens as a
dense vector).

Rows of ``block_tables`` past a request's own blocks keep stale ids: every kernel reads a
request's table only up to its ``seq_lens`` entry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pagoda.core.request import Request
from pagoda.core.scheduler import SchedulerOutput
from pagoda.layers.attention_metadata import AttentionMetadata


def host_to_device(values: list, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A small host list as a tensor on ``device`` without waiting for the device: on CUDA the
    values go through pinned memory and a non-blocking copy (a copy from pageable memory
    would wait for every kernel queued before it, which undoes async scheduling)."""
    if device.type != "cuda":
        return torch.tensor(values, dtype=dtype, device=device)
    return torch.tensor(values, dtype=dtype).pin_memory().to(device, non_blocking=True)


@dataclass(slots=True)
class PreviousSample:
    """The last launched step's sampled tokens (on the device) and each request's row in
    them: where a decode whose input token is pending finds it."""

    rows: dict[Request, int]
    sampled: torch.Tensor


def fill_pending(input_ids: torch.Tensor, src: torch.Tensor, sampled: torch.Tensor) -> None:
    """``input_ids[i] = sampled[src[i]]`` where ``src[i] >= 0``, on the device."""
    input_ids.copy_(torch.where(src >= 0, sampled[src.clamp(min=0)], input_ids))


class DeviceInputs:
    """Pinned staging plus persistent device buffers for batches of at most ``max_tokens``
    tokens over ``max_reqs`` requests, each with at most ``max_blocks`` KV blocks."""

    def __init__(
        self, max_tokens: int, max_reqs: int, max_blocks: int, block_size: int, device: torch.device
    ) -> None:
        self.block_size = block_size
        self.max_blocks = max_blocks
        self.device = device
        self.tok64_host = torch.zeros(4, max_tokens, dtype=torch.int64, pin_memory=True)
        size = max_reqs * (1 + max_blocks)
        self.req32_host = torch.zeros(size, dtype=torch.int32, pin_memory=True)
        self.tok64 = torch.zeros(4, max_tokens, dtype=torch.int64, device=device)
        self.req32 = torch.zeros(size, dtype=torch.int32, device=device)
        self.input_ids, self.positions, self.slot_mapping, self.pending_src = self.tok64.unbind(0)
        self.seq_lens = self.req32[:max_reqs]
        self.block_tables = self.req32[max_reqs:].view(max_reqs, max_blocks)
        self.max_reqs = max_reqs
        self._tok = self.tok64_host.numpy()
        self._lens = self.req32_host[:max_reqs].numpy()
        self._tables = self.req32_host[max_reqs:].view(max_reqs, max_blocks).numpy()
        self._previous: PreviousSample | None = None  # set by stage when a token is pending
        # The staging buffers are rewritten only after the previous step's copies are done.
        self._copied = torch.cuda.Event() if device.type == "cuda" else None

    def stage(
        self, sched: SchedulerOutput, pad_to: int = 0, previous: PreviousSample | None = None
    ) -> tuple[list[int], list[int]]:
        """Write the batch into the host buffers; rows ``len(scheduled)..pad_to`` become
        padding (slot -1: no KV write; context length 1 over block 0). Pending input tokens
        are found in ``previous``. Returns (query_start_loc, seq_lens)."""
        if self._copied is not None:
            self._copied.synchronize()
        bs = self.block_size
        ids, pos, slots, src = self._tok
        self._previous = None
        tables = self._tables
        qsl = [0]
        seq_lens: list[int] = []
        t = 0
        for i, s in enumerate(sched.scheduled):
            r = s.request
            start = r.num_computed_tokens
            n = s.num_new_tokens
            end = start + n
            blocks = s.block_ids
            tables[i, : len(blocks)] = blocks
            if n == 1:
                pos[t] = start
                slots[t] = blocks[start // bs] * bs + start % bs
                if start < len(r.token_ids):
                    ids[t], src[t] = r.token_ids[start], -1
                else:  # pending: filled in on the device from the previous step's sample
                    assert previous is not None
                    ids[t], src[t] = 0, previous.rows[r]
                    self._previous = previous
            else:
                p = np.arange(start, end)
                ids[t : t + n] = r.token_ids[start:end]
                pos[t : t + n] = p
                slots[t : t + n] = np.asarray(blocks, dtype=np.int64)[p // bs] * bs + p % bs
                src[t : t + n] = -1
            t += n
            qsl.append(t)
            seq_lens.append(end)
        num_reqs = len(seq_lens)
        self._lens[:num_reqs] = seq_lens
        if pad_to > num_reqs:
            ids[t : t + pad_to - num_reqs] = 0
            pos[t : t + pad_to - num_reqs] = 0
            slots[t : t + pad_to - num_reqs] = -1
            src[t : t + pad_to - num_reqs] = -1
            self._lens[num_reqs:pad_to] = 1
            tables[num_reqs:pad_to, 0] = 0
        self._num_tokens = max(t, t + pad_to - num_reqs)
        self._num_reqs = max(num_reqs, pad_to)
        return qsl, seq_lens

    def copy_to_device(self) -> None:
        """Start the host-to-device copies of what :meth:`stage` wrote (non-blocking), then
        fill in pending input tokens on the device."""
        nt, nr = self._num_tokens, self._num_reqs
        previous = self._previous
        # Row by row: each copy is contiguous, so it stays asynchronous.
        for row in range(4 if previous is not None else 3):
            self.tok64[row, :nt].copy_(self.tok64_host[row, :nt], non_blocking=True)
        self.req32[:nr].copy_(self.req32_host[:nr], non_blocking=True)
        rows = slice(self.max_reqs, self.max_reqs + nr * self.block_tables.shape[1])
        self.req32[rows].copy_(self.req32_host[rows], non_blocking=True)
        if self._copied is not None:
            self._copied.record()
        if previous is not None:
            fill_pending(self.input_ids[:nt], self.pending_src[:nt], previous.sampled)

    def prepare(
        self, sched: SchedulerOutput, previous: PreviousSample | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata]:
        """The batch on the device, for an eager forward pass."""
        qsl, seq_lens = self.stage(sched, previous=previous)
        self.copy_to_device()
        nt, nr = qsl[-1], len(seq_lens)
        meta = AttentionMetadata(
            num_decodes=sched.num_decodes,
            query_start_loc=qsl,
            seq_lens=seq_lens,
            slot_mapping=self.slot_mapping[:nt],
            block_tables=self.block_tables[:nr],
            block_size=self.block_size,
            max_seq_len=max(seq_lens),
        )
        return self.input_ids[:nt], self.positions[:nt], meta
