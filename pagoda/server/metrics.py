"""Prometheus metrics (``GET /metrics``), every name prefixed ``pagoda:``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from pagoda.outputs import RequestOutput

_LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
)


class _EngineCollector(Collector):
    """Reads the engine's live state at scrape time."""

    def __init__(self, stats: Callable[[], Any | None], model_name: str) -> None:
        self._stats = stats
        self._model = model_name

    def collect(self) -> Iterator[Any]:
        s = self._stats()
        if s is None:
            return
        labels = ["model_name"]
        for name, doc, value in (
            ("pagoda:num_requests_running", "Requests in the running batch.", s.num_running),
            ("pagoda:num_requests_waiting", "Requests waiting to be scheduled.", s.num_waiting),
            (
                "pagoda:kv_cache_usage_perc",
                "Fraction of KV-cache blocks in use (0..1).",
                s.kv_cache_usage,
            ),
        ):
            g = GaugeMetricFamily(name, doc, labels=labels)
            g.add_metric([self._model], value)
            yield g
        for name, doc, value in (
            (
                "pagoda:prefix_cache_queries",
                "Prompt tokens looked up in the prefix cache.",
                s.prefix_cache_queries,
            ),
            (
                "pagoda:prefix_cache_hits",
                "Prompt tokens found in the prefix cache.",
                s.prefix_cache_hits,
            ),
            (
                "pagoda:num_preemptions",
                "Requests preempted for lack of KV blocks.",
                s.num_preemptions,
            ),
        ):
            c = CounterMetricFamily(name, doc, labels=labels)
            c.add_metric([self._model], value)
            yield c


class ServerMetrics:
    """One registry per server, so several servers (tests) never share counters."""

    def __init__(self, model_name: str, stats: Callable[[], Any | None]) -> None:
        self.registry = CollectorRegistry()
        self.model_name = model_name
        labels = ["model_name"]
        r = self.registry
        self.prompt_tokens = Counter(
            "pagoda:prompt_tokens", "Prompt tokens processed.", labels, registry=r
        )
        self.generation_tokens = Counter(
            "pagoda:generation_tokens", "Tokens generated.", labels, registry=r
        )
        self.request_success = Counter(
            "pagoda:request_success", "Finished requests.", labels + ["finished_reason"], registry=r
        )
        self.ttft = Histogram(
            "pagoda:time_to_first_token_seconds",
            "Time to first token.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "pagoda:time_per_output_token_seconds",
            "Time per output token after the first.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "pagoda:e2e_request_latency_seconds",
            "End-to-end request latency.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_time = Histogram(
            "pagoda:request_queue_time_seconds",
            "Time from arrival to first scheduling.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        r.register(_EngineCollector(stats, model_name))

    def observe_finished(self, output: RequestOutput) -> None:
        """Record a finished request's tokens and latencies (from the engine's timestamps)."""
        m = output.metrics
        name = self.model_name
        num_out = sum(len(o.token_ids) for o in output.outputs)
        self.prompt_tokens.labels(name).inc(len(output.prompt_token_ids))
        self.generation_tokens.labels(name).inc(num_out)
        for o in output.outputs:
            self.request_success.labels(name, o.finish_reason or "abort").inc()
        arrival, first, done = (
            m.get("arrival_time"),
            m.get("first_token_time"),
            m.get("finished_time"),
        )
        scheduled = m.get("first_scheduled_time")
        if arrival is None or done is None:
            return
        self.e2e.labels(name).observe(done - arrival)
        if scheduled is not None:
            self.queue_time.labels(name).observe(scheduled - arrival)
        if first is not None:
            self.ttft.labels(name).observe(first - arrival)
            per_seq = num_out / max(1, len(output.outputs))
            if per_seq > 1:
                self.tpot.labels(name).observe((done - first) / (per_seq - 1))

    def render(self) -> bytes:
        return generate_latest(self.registry)
