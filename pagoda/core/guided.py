"""Guided decoding in the engine: backends from the registry, a compile cache, auto fallback."""

from __future__ import annotations

import logging
import threading
from typing import Any

from pagoda.interfaces.guided import (
    CompiledConstraint,
    GuidedDecodingParams,
    UnsupportedConstraintError,
)
from pagoda.plugin_manager import PluginManager

logger = logging.getLogger("pagoda")


class GuidedDecoding:
    """Compiles constraints (cached by backend and constraint; thread-safe, so callers can
    compile off the step loop) with the backend a request names or the engine's default."""

    def __init__(
        self,
        plugins: PluginManager,
        tokenizer: Any,
        vocab_size: int,
        eos_token_ids: frozenset[int],
        default_backend: str,
    ) -> None:
        self._registry = plugins.guided_backends
        if default_backend != "auto" and default_backend not in self._registry:
            self._registry.entry(default_backend)  # raises, listing the known backends
        self.default_backend = default_backend
        self._tokenizer = tokenizer
        self._vocab_size = vocab_size
        self._eos = sorted(eos_token_ids)
        self._backends: dict[str, Any] = {}
        self._cache: dict[tuple, CompiledConstraint] = {}
        self._lock = threading.Lock()

    def _backend(self, name: str) -> Any:
        with self._lock:
            if name not in self._backends:
                cls = self._registry.get(name)
                self._backends[name] = cls(self._tokenizer, self._vocab_size, self._eos)
            return self._backends[name]

    def compile(self, params: GuidedDecodingParams) -> CompiledConstraint:
        """The compiled constraint; ValueError for a bad or inexpressible constraint."""
        name = params.backend or self.default_backend
        if name != "auto":
            return self._compile_with(name, params)
        # "auto": registered backends by descending priority, moving on only when one cannot
        # express the constraint.
        entries = sorted(self._registry.entries(), key=lambda e: -e.extra.get("priority", 0))
        names = [e.name for e in entries]
        for i, candidate in enumerate(names):
            try:
                return self._compile_with(candidate, params)
            except UnsupportedConstraintError as exc:
                if i + 1 == len(names):
                    raise
                logger.info(
                    "guided decoding: %s cannot express this %s constraint (%s); "
                    "falling back to %s",
                    candidate,
                    params.kind,
                    exc,
                    names[i + 1],
                )
        raise ValueError("no guided-decoding backend is installed")

    def _compile_with(self, name: str, params: GuidedDecodingParams) -> CompiledConstraint:
        key = (name, params.cache_key())
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        compiled = self._backend(name).compile(params)
        with self._lock:
            self._cache.setdefault(key, compiled)
        return compiled
