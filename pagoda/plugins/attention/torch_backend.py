"""Attention over the paged KV cache in plain torch: batched decode, per-request prefill."""

from __future__ import annotations

import torch

from pagoda.interfaces import AttentionMetadata
from pagoda.kernels.attention_ref import decode_attention, gather_slots, prefill_attention, write_kv


class TorchAttentionBackend:
    """Decodes (the first ``num_decodes`` requests) run as one padded batch; prefill chunks run
    one request at a time."""

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
            return decode_attention(
                q,
                kv_cache,
                meta.backend_data["decode_slots"],
                meta.backend_data["decode_mask"],
                scale,
            )
        out = torch.empty_like(q)
        if nd:
            out[:nd] = decode_attention(
                q[:nd],
                kv_cache,
                meta.backend_data["decode_slots"],
                meta.backend_data["decode_mask"],
                scale,
            )
        qsl = meta.query_start_loc
        start = qsl[nd]
        out[start:] = prefill_attention(
            q[start:],
            kv_cache,
            [x - start for x in qsl[nd:]],
            meta.seq_lens[nd:],
            meta.block_tables[nd:],
            scale,
        )
        return out
