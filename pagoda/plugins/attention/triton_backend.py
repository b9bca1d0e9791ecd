"""Attention over the paged KV cache on CUDA with the Triton kernels."""

from __future__ import annotations

import torch

from pagoda.kernels.triton_attention import paged_decode_attention, prefill_attention, write_kv
from pagoda.layers.attention_metadata import AttentionMetadata


class TritonAttentionBackend:
    """Decodes (the first ``num_decodes`` requests, one query token each) run the split-KV
    decode kernel; the prefill chunks after them run one varlen prefill kernel.

    ``prepare`` does the step's host work once for all layers: one pinned host tensor with the
    sequence lengths and query offsets, copied to the device without a sync. ``forward`` makes
    no host syncs. ``decode_num_splits`` (None: chosen from the batch shape) may be fixed by
    whoever captures CUDA graphs; the default already depends on the batch size only."""

    decode_num_splits: int | None = None

    def prepare(self, meta: AttentionMetadata) -> None:
        nd, num_reqs = meta.num_decodes, meta.num_reqs
        qsl = meta.query_start_loc
        start = qsl[nd]
        # [seq_lens (num_reqs) | prefill query_start_loc relative to `start` (num_reqs - nd + 1)]
        pinned = meta.block_tables.is_cuda
        host = torch.empty(2 * num_reqs - nd + 1, dtype=torch.int32, pin_memory=pinned)
        host[:num_reqs] = torch.tensor(meta.seq_lens, dtype=torch.int32)
        host[num_reqs:] = torch.tensor(qsl[nd:], dtype=torch.int32) - start
        dev = host.to(meta.block_tables.device, non_blocking=True)
        data = meta.backend_data
        data["seq_lens"] = dev[:num_reqs]
        data["prefill_query_start_loc"] = dev[num_reqs:]
        data["prefill_start"] = start
        if num_reqs > nd:
            data["prefill_max_query_len"] = max(qsl[i + 1] - qsl[i] for i in range(nd, num_reqs))

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        kv_cache: torch.Tensor,
        meta: AttentionMetadata,
        scale: float,
    ) -> torch.Tensor:
        data = meta.backend_data
        if "seq_lens" not in data:
            self.prepare(meta)
        write_kv(kv_cache, k, v, meta.slot_mapping)
        nd = meta.num_decodes
        out = torch.empty_like(q)
        if nd:
            paged_decode_attention(
                q[:nd],
                kv_cache,
                meta.block_tables[:nd],
                data["seq_lens"][:nd],
                scale,
                num_splits=self.decode_num_splits,
                out=out[:nd],
            )
        if meta.num_reqs > nd:
            start = data["prefill_start"]
            prefill_attention(
                q[start:],
                k[start:],
                v[start:],
                kv_cache,
                data["prefill_query_start_loc"],
                data["seq_lens"][nd:],
                meta.block_tables[nd:],
                scale,
                max_query_len=data["prefill_max_query_len"],
                out=out[start:],
            )
        return out
