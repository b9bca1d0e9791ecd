"""What every handler shares: the engine (once loaded), server options and metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from pagoda.core.async_engine import AsyncLLMEngine
from pagoda.interfaces.reasoning import ReasoningParser
from pagoda.interfaces.tool_parser import ToolParser
from pagoda.server.errors import APIError
from pagoda.server.metrics import ServerMetrics


@dataclass
class ServerOptions:
    """The server-only flags of ``pagoda serve``."""

    served_model_names: list[str]
    api_key: str | None = None
    chat_template: str | None = None
    allowed_origins: list[str] = field(default_factory=list)
    disable_log_requests: bool = False
    max_log_len: int | None = None
    max_request_bytes: int = 32 << 20
    enable_auto_tool_choice: bool = False
    #: ``--tool-call-parser``'s class (a :class:`pagoda.interfaces.ToolParser`), or None.
    tool_parser: type[ToolParser] | None = None
    #: ``--reasoning-parser``'s class (a :class:`pagoda.interfaces.ReasoningParser`), or None.
    reasoning_parser: type[ReasoningParser] | None = None


@dataclass
class ServerState:
    """Shared by all handlers; ``engine`` is None until the model has loaded."""

    options: ServerOptions
    metrics: ServerMetrics
    engine: AsyncLLMEngine | None = None
    load_error: BaseException | None = None
    started: float = field(default_factory=time.time)

    def ready_engine(self) -> AsyncLLMEngine:
        if self.engine is None:
            if self.load_error is not None:
                raise APIError(503, f"the model failed to load: {self.load_error}")
            raise APIError(503, "the model is still loading; retry shortly")
        if not self.engine.is_running:
            raise APIError(503, "the engine has stopped")
        return self.engine

    def check_model(self, name: str | None) -> str:
        """The served name a request addresses (404 for an unknown one)."""
        if name is None or name == "":
            return self.options.served_model_names[0]
        if name not in self.options.served_model_names:
            raise APIError(404, f"The model `{name}` does not exist.", param="model")
        return name

    @property
    def tokenizer(self) -> Any:
        return self.ready_engine().tokenizer

    @property
    def max_model_len(self) -> int:
        return int(self.ready_engine().config.model.max_model_len or 0)
