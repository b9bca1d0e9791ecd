"""Continuous batching with chunked prefill and recompute preemption."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from pagoda.config import CacheConfig, SchedulerConfig
from pagoda.core.kv_cache import KVCacheManager
from pagoda.core.request import Request, RequestStatus


@dataclass(slots=True)
class ScheduledRequest:
    """One request's share of a step: ``num_new_tokens`` tokens starting at its computed count."""

    request: Request
    num_new_tokens: int
    block_ids: list[int]

    @property
    def samples(self) -> bool:
        """Whether this step reaches the request's last token, so a token is sampled."""
        r = self.request
        return r.num_computed_tokens + self.num_new_tokens == r.num_all_tokens


@dataclass(slots=True)
class SchedulerOutput:
    """A step's batch: requests with one new token (decodes) first, then prefill chunks."""

    scheduled: list[ScheduledRequest] = field(default_factory=list)
    num_decodes: int = 0
    preempted: list[Request] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(s.num_new_tokens for s in self.scheduled)

    @property
    def is_empty(self) -> bool:
        return not self.scheduled


class Scheduler:
    """Each step: running requests first (decodes, then unfinished prefills), then waiting
    ones, under ``max_num_batched_tokens`` and ``max_num_seqs``. When blocks run out the newest
    running request is preempted: its blocks are freed and it is recomputed later."""

    def __init__(self, config: SchedulerConfig, cache: CacheConfig, num_blocks: int) -> None:
        self.config = config
        self.kv = KVCacheManager(num_blocks, cache.block_size, cache.enable_prefix_caching)
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.num_preemptions = 0

    def add_request(self, request: Request) -> None:
        self.waiting.append(request)

    def has_unfinished_requests(self) -> bool:
        return bool(self.waiting or self.running)

    def _preempt(self, request: Request) -> None:
        self.running.remove(request)
        self.kv.free(request)
        request.status = RequestStatus.PREEMPTED
        request.num_computed_tokens = 0
        request.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(request)

    def schedule(self) -> SchedulerOutput:
        budget = self.config.max_num_batched_tokens
        out = SchedulerOutput()
        decodes: list[ScheduledRequest] = []
        prefills: list[ScheduledRequest] = []
        # Decodes before unfinished prefills, each group in admission order.
        order = sorted(self.running, key=lambda r: r.num_all_tokens - r.num_computed_tokens > 1)
        scheduled: dict[str, ScheduledRequest] = {}
        for request in order:
            if budget == 0:
                break
            if request.status is not RequestStatus.RUNNING or request.length_capped:
                continue  # preempted earlier in this loop, or finishing on its pending token
            num_new = min(request.num_all_tokens - request.num_computed_tokens, budget)
            while not self.kv.allocate_slots(request, num_new):
                victim = self.running[-1]
                self._preempt(victim)
                out.preempted.append(victim)
                undone = scheduled.pop(victim.request_id, None)
                if undone is not None:  # scheduled earlier in this loop: take it back
                    budget += undone.num_new_tokens
                    (decodes if undone.num_new_tokens == 1 else prefills).remove(undone)
                if victim is request:
                    break
            if request.status is not RequestStatus.RUNNING:
                continue
            budget -= num_new
            sched = ScheduledRequest(request, num_new, self.kv.block_ids(request))
            scheduled[request.request_id] = sched
            (decodes if num_new == 1 else prefills).append(sched)
        if not out.preempted:
            budget = self._admit_waiting(budget, decodes, prefills)
        out.scheduled = decodes + prefills
        out.num_decodes = len(decodes)
        return out

    def _admit_waiting(
        self, budget: int, decodes: list[ScheduledRequest], prefills: list[ScheduledRequest]
    ) -> int:
        while self.waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            request = self.waiting[0]
            # A pooling prompt is computed whole in one step (its pooler needs every hidden
            # state; an encoder cannot be chunked): no prefix hit, no split. The config makes
            # max_num_batched_tokens >= max_model_len, so it fits an empty step.
            whole = request.pooling is not None
            computed, num_hit = [], 0
            if request.num_computed_tokens == 0 and not whole:
                computed, num_hit = self.kv.get_computed_blocks(request)
            num_new = min(request.num_tokens - request.num_computed_tokens - num_hit, budget)
            if whole and num_new < request.num_tokens:
                break
            if not self.kv.allocate_slots(request, num_new, computed):
                break
            self.waiting.popleft()
            request.num_computed_tokens += num_hit
            if request.num_cached_tokens < 0:
                request.num_cached_tokens = num_hit
            if request.first_scheduled_time is None:
                request.first_scheduled_time = time.monotonic()
            request.status = RequestStatus.RUNNING
            self.running.append(request)
            budget -= num_new
            sched = ScheduledRequest(request, num_new, self.kv.block_ids(request))
            (decodes if num_new == 1 else prefills).append(sched)
        return budget

    def finish(self, request: Request, status: RequestStatus) -> None:
        """Mark a request finished (or aborted) and free its blocks at once."""
        request.status = status
        if request in self.running:
            self.running.remove(request)
        else:
            try:
                self.waiting.remove(request)
            except ValueError:
                pass
        self.kv.free(request)
