"""Pooling: hidden states of whole prompts -> one result per request (embed, classify, score,
reward).

Pooling requests are prefill-only work scheduled like any other, with two invariants the
scheduler keeps for them: a pooling prompt is never split into chunks and never starts from
a prefix-cache hit, so each step holds every token of each of its pooling requests::

    hidden  [ req 0: t0 t1 t2 | req 1: t0 t1 | req 2: t0 t1 t2 t3 ]   (flat batch)
    CLS     t0 of each request   LAST  last token   MEAN  average   ALL  every row

Causal models (the Llama family) run through the normal paged-KV forward; their blocks are
freed when the request finishes in the same step. Bidirectional encoders (BERT, models with
``is_encoder = True``) cannot be chunk-prefilled or read a causal cache, so they run outside
the KV path: one flat varlen batch, attention within each request (the ``query_start_loc``
of the step's metadata), nothing written to any cache. The scheduler still counts their
blocks (virtual ones: no memory), which keeps its budget logic unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from pagoda.interfaces import AttentionMetadata
from pagoda.layers.forward_context import ForwardContext, forward_context
from pagoda.pooling_params import PoolerConfig, PoolingParams


@dataclass(slots=True)
class PoolingState:
    """What a pooling request carries besides its tokens (``Request.pooling``)."""

    params: PoolingParams
    task: str
    token_type_ids: list[int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Pooler:
    """Runs a pooling step for the model runner and turns hidden states into results.

    ``model`` may declare ``is_encoder`` (bidirectional, no KV cache; its forward takes
    ``token_type_ids``), ``default_pooling_type`` and ``pooler_head(pooled)`` (the classifier
    of a ``*ForSequenceClassification``). A causal LM converted to classify uses its LM head
    as the classifier (next-token probabilities are the classes)."""

    def __init__(self, model: torch.nn.Module, task: str, config: PoolerConfig) -> None:
        self.model = model
        self.task = task
        self.config = config
        self.is_encoder = bool(getattr(model, "is_encoder", False))
        default_type = getattr(model, "default_pooling_type", "LAST")
        self.pooling_type = config.pooling_type or default_type
        head = getattr(model, "pooler_head", None)
        if head is None and task == "classify":
            head = getattr(model, "compute_logits", None)
        self.head = head if task in ("classify", "score", "reward") else None

    # --- the step ---

    def execute(self, runner: Any, sched: Any) -> dict[str, torch.Tensor]:
        """Forward the step's requests and pool them: request id -> result (float32, CPU)."""
        if self.is_encoder:
            hidden, qsl = self._encoder_forward(runner, sched)
        else:
            hidden, meta = runner._forward(sched)
            qsl = meta.query_start_loc
        return self.pool(hidden, qsl, [s.request for s in sched.scheduled])

    def _encoder_forward(self, runner: Any, sched: Any) -> tuple[torch.Tensor, list[int]]:
        dev = runner.device
        input_ids: list[int] = []
        types: list[int] = []
        positions: list[int] = []
        qsl = [0]
        for s in sched.scheduled:
            r = s.request
            if r.num_computed_tokens != 0 or s.num_new_tokens != r.num_tokens:
                raise RuntimeError(f"encoder request {r.request_id} was split across steps")
            input_ids.extend(r.token_ids)
            tt = r.pooling.token_type_ids
            types.extend(tt if tt is not None else [0] * r.num_tokens)
            positions.extend(range(r.num_tokens))
            qsl.append(len(input_ids))
        seq_lens = [qsl[i + 1] - qsl[i] for i in range(len(qsl) - 1)]
        meta = AttentionMetadata(
            num_decodes=0,
            query_start_loc=qsl,
            seq_lens=seq_lens,
            slot_mapping=torch.empty(0, dtype=torch.long, device=dev),
            block_tables=torch.empty(0, dtype=torch.int32, device=dev),
            block_size=runner.block_size,
            max_seq_len=max(seq_lens),
        )
        with forward_context(ForwardContext(meta, runner.backend)):
            hidden = self.model(
                torch.tensor(input_ids, dtype=torch.long, device=dev),
                torch.tensor(positions, dtype=torch.long, device=dev),
                token_type_ids=torch.tensor(types, dtype=torch.long, device=dev),
            )
        return hidden, qsl

    # --- pooling and activation ---

    def pool(
        self, hidden: torch.Tensor, qsl: list[int], requests: list[Any]
    ) -> dict[str, torch.Tensor]:
        n = len(requests)
        starts = torch.tensor(qsl[:-1], device=hidden.device)
        ends = torch.tensor(qsl[1:], device=hidden.device)
        kind = self.pooling_type
        if kind == "CLS":
            pooled: torch.Tensor | list[torch.Tensor] = hidden[starts]
        elif kind == "LAST":
            pooled = hidden[ends - 1]
        elif kind == "MEAN":
            lens = ends - starts
            seg = torch.repeat_interleave(torch.arange(n, device=hidden.device), lens)
            sums = torch.zeros(n, hidden.shape[-1], dtype=torch.float32, device=hidden.device)
            sums.index_add_(0, seg, hidden.float())
            pooled = sums / lens.unsqueeze(1)
        else:  # ALL
            pooled = [hidden[qsl[i] : qsl[i + 1]] for i in range(n)]
        if self.head is not None:
            if isinstance(pooled, list):
                pooled = [self.head(p) for p in pooled]
            else:
                pooled = self.head(pooled.to(hidden.dtype))
        results = {}
        for i, r in enumerate(requests):
            data = pooled[i].float()
            results[r.request_id] = self._activate(data, r.pooling.params).cpu()
        return results

    def _activate(self, data: torch.Tensor, params: PoolingParams) -> torch.Tensor:
        if self.head is None:  # embeddings (or raw hidden states)
            if params.dimensions is not None:
                data = data[..., : params.dimensions]
            normalize = _first(params.normalize, self.config.normalize, self.task == "embed")
            return F.normalize(data, p=2, dim=-1) if normalize else data
        on = _first(
            params.activation,
            params.softmax,
            self.config.activation,
            self.config.softmax,
            self.task != "reward",
        )
        if not on:
            return data
        return data.sigmoid() if data.shape[-1] == 1 else data.softmax(dim=-1)


def _first(*values: bool | None) -> bool:
    return next(bool(v) for v in values if v is not None)
