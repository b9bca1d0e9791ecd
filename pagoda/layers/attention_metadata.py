"""Per-step attention metadata for a flat varlen batch over the paged KV cache."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(slots=True)
class AttentionMetadata:
    """Describes one step's flat batch.

    Requests are ordered decodes first (one query token each), then prefill chunks. For
    request i, its query tokens are ``query_start_loc[i]:query_start_loc[i+1]`` of the flat
    batch and are the last ``num_query`` of its ``seq_lens[i]`` context tokens::

        context  |<------------ seq_lens[i] ------------>|
                 [ cached tokens ........ | query chunk ]
                                          ^ query_start_loc[i] in the flat batch

    ``slot_mapping[t]`` = block_id * block_size + offset is where token t's K/V is written.
    """

    num_decodes: int
    query_start_loc: list[int]  # num_reqs + 1
    seq_lens: list[int]  # num_reqs, context length including this step's tokens
    slot_mapping: torch.Tensor  # [num_tokens] int64
    block_tables: torch.Tensor  # [num_reqs, max_blocks] int32, padded with 0
    block_size: int
    max_seq_len: int = 0
    backend_data: dict[str, Any] = field(default_factory=dict)

    @property
    def num_reqs(self) -> int:
        return len(self.seq_lens)
