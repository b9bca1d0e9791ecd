"""Attention over the paged KV cache on the CPU: batched decode, per-request prefill."""

from __future__ import annotations

import torch

from pagoda.interfaces import AttentionMetadata
from pagoda.kernels import cpu_decode_attention
from pagoda.kernels.attention_ref import decode_attention, gather_slots, prefill_attention, write_kv


class TorchAttentionBackend:
    """Plain torch: decodes (the first ``num_decodes`` requests) run as one padded batch over
    gathered contexts; prefill chunks run one request at a time."""

    def prepare(self, meta: AttentionMetadata) -> None:
        nd = meta.num_decodes
        if nd == 0:
            return
        lengths = torch.tensor(meta.seq_lens[:nd], device=meta.block_tables.device)
        max_len = int(max(meta.seq_lens[:nd]))
        meta.backend_data["decode_slots"] = gather_slots(
            meta.block_tables[:nd], meta.block_size, max_len
        )
        meta.backend_data["decode_mask"] = torch.arange(
            max_len, device=lengths.device
        ) < lengths.unsqueeze(1)

    def decode(
        self, q: torch.Tensor, kv_cache: torch.Tensor, meta: AttentionMetadata, scale: float
    ) -> torch.Tensor:
        data = meta.backend_data
        return decode_attention(q, kv_cache, data["decode_slots"], data["decode_mask"], scale)

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        kv_cache: torch.Tensor,
        meta: AttentionMetadata,
        scale: float,
    ) -> torch.Tensor:
        write_kv(kv_cache, k, v, meta.slot_mapping)
        nd = meta.num_decodes
        if nd == meta.num_reqs:
            return self.decode(q, kv_cache, meta, scale)
        out = torch.empty_like(q)
        if nd:
            out[:nd] = self.decode(q[:nd], kv_cache, meta, scale)
        qsl = meta.query_start_loc
        start = qsl[nd]
        out[start:] = prefill_attention(
            q[start:],
            k[start:],
            v[start:],
            kv_cache,
            [x - start for x in qsl[nd:]],
            meta.seq_lens[nd:],
            meta.block_tables[nd:],
            scale,
        )
        return out


class CPUAttentionBackend(TorchAttentionBackend):
    """The CPU default: decodes read the paged cache directly with the C kernel (float32),
    avoiding the gather copy; anything else falls back to plain torch."""

    def prepare(self, meta: AttentionMetadata) -> None:
        nd = meta.num_decodes
        if nd == 0:
            return
        meta.backend_data["decode_seq_lens"] = torch.tensor(meta.seq_lens[:nd], dtype=torch.int32)
        meta.backend_data["decode_block_tables"] = meta.block_tables[:nd].contiguous()

    def decode(
        self, q: torch.Tensor, kv_cache: torch.Tensor, meta: AttentionMetadata, scale: float
    ) -> torch.Tensor:
        if (
            q.dtype == torch.float32
            and kv_cache.dtype == torch.float32
            and cpu_decode_attention.load() is not None
        ):
            data = meta.backend_data
            return cpu_decode_attention.paged_decode_attention(
                q, kv_cache, data["decode_block_tables"], data["decode_seq_lens"], scale
            )
        if "decode_slots" not in meta.backend_data:
            super().prepare(meta)
        return super().decode(q, kv_cache, meta, scale)
