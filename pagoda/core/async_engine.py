"""AsyncLLMEngine: the engine's step loop on its own thread, per-request asyncio queues.

The server's event loop never runs a step: it sends commands (add, abort) to the engine
thread and awaits outputs on the request's queue, so a slow step never blocks accepting
connections. Every engine mutation happens on the engine thread.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from pagoda.config import EngineConfig
from pagoda.core.engine import LLMEngine, PromptInput
from pagoda.interfaces.guided import GuidedDecodingParams
from pagoda.outputs import RequestOutput
from pagoda.plugin_manager import PluginManager
from pagoda.sampling_params import SamplingParams

logger = logging.getLogger("pagoda")


@dataclass(slots=True)
class _Stream:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[RequestOutput | BaseException]

    def put(self, item: RequestOutput | BaseException) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


@dataclass(slots=True)
class EngineStats:
    """A snapshot for /metrics, read without stopping the engine."""

    num_running: int
    num_waiting: int
    kv_cache_usage: float
    prefix_cache_queries: int
    prefix_cache_hits: int
    num_preemptions: int


class AsyncLLMEngine:
    """Wraps an :class:`LLMEngine` for asyncio callers. Call :meth:`start` once built."""

    def __init__(self, config: EngineConfig, plugins: PluginManager | None = None) -> None:
        self.engine = LLMEngine(config, plugins)
        self._commands: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._streams: dict[str, _Stream] = {}
        self._thread = threading.Thread(target=self._run, name="pagoda-engine", daemon=True)
        self._stopping = False
        self.error: BaseException | None = None

    @property
    def tokenizer(self) -> Any:
        return self.engine.tokenizer

    @property
    def config(self) -> EngineConfig:
        return self.engine.config

    def start(self) -> None:
        self._thread.start()

    def shutdown(self) -> None:
        """Abort everything still running and stop the engine thread."""
        self._stopping = True
        self._commands.put(("stop",))
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    @property
    def is_running(self) -> bool:
        return self._thread.is_alive() and self.error is None

    async def generate(
        self, prompt: PromptInput, params: SamplingParams, request_id: str
    ) -> AsyncIterator[RequestOutput]:
        """Yield the request's outputs until it finishes. Validation errors (ValueError,
        TypeError) are raised from the first iteration. Leaving the loop early (a client
        that disconnected) aborts the request and frees its KV blocks at once."""
        if self.error is not None:
            raise RuntimeError(f"the engine has stopped: {self.error}")
        stream = _Stream(asyncio.get_running_loop(), asyncio.Queue())
        if request_id in self._streams:
            raise ValueError(f"request id {request_id!r} is already in use")
        self._streams[request_id] = stream
        self._commands.put(("add", request_id, prompt, params))
        finished = False
        try:
            while not finished:
                item = await stream.queue.get()
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                finished = item.finished
                yield item
        finally:
            self._streams.pop(request_id, None)
            if not finished:
                self.abort(request_id)

    async def compile_guided(self, params: GuidedDecodingParams) -> None:
        """Compile (and cache) a structured-output constraint on a worker thread, so a slow
        grammar never stalls the step loop; the engine thread then finds it in the cache.
        Raises ValueError for an invalid or inexpressible constraint."""
        await asyncio.get_running_loop().run_in_executor(None, self.engine.guided.compile, params)

    def abort(self, request_id: str) -> None:
        self._commands.put(("abort", request_id))

    def stats(self) -> EngineStats:
        sched = self.engine.scheduler
        return EngineStats(
            num_running=len(sched.running),
            num_waiting=len(sched.waiting),
            kv_cache_usage=sched.kv.usage,
            prefix_cache_queries=sched.kv.stats.queries,
            prefix_cache_hits=sched.kv.stats.hits,
            num_preemptions=sched.num_preemptions,
        )

    # --- engine thread ---

    def _run(self) -> None:
        try:
            while not self._stopping:
                self._drain_commands(block=not self.engine.has_unfinished_requests())
                if self.engine.has_unfinished_requests():
                    for output in self.engine.step():
                        stream = self._streams.get(output.request_id)
                        if stream is not None:
                            stream.put(output)
        except BaseException as exc:  # the engine is broken: fail every waiting request
            logger.exception("engine loop failed")
            self.error = exc
            for stream in list(self._streams.values()):
                stream.put(RuntimeError(f"the engine failed: {exc}"))
        finally:
            for rid in list(self.engine.parents):
                self.engine.abort_request(rid)

    def _drain_commands(self, block: bool) -> None:
        while True:
            try:
                command = self._commands.get(block=block)
            except queue.Empty:
                return
            block = False
            kind = command[0]
            if kind == "stop":
                self._stopping = True
                return
            if kind == "abort":
                self.engine.abort_request(command[1])
            elif kind == "add":
                _, rid, prompt, params = command
                try:
                    self.engine.add_request(rid, prompt, params)
                except (ValueError, TypeError) as exc:
                    stream = self._streams.get(rid)
                    if stream is not None:
                        stream.put(exc)
