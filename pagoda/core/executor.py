"""Executors: how the engine reaches its model workers (one in-process worker for now)."""

from __future__ import annotations

from pagoda.config import EngineConfig
from pagoda.core.model_runner import LaunchedStep, ModelRunner
from pagoda.core.scheduler import SchedulerOutput
from pagoda.plugin_manager import PluginManager


class InProcessExecutor:
    """Runs the single model worker in the engine's own process.

    Multiprocess and Ray executors (tensor parallelism) will offer the same members.
    """

    def __init__(self, config: EngineConfig, plugins: PluginManager) -> None:
        self.runner = ModelRunner(config, plugins)

    @property
    def num_blocks(self) -> int:
        return self.runner.num_blocks

    def launch_model(self, sched: SchedulerOutput) -> LaunchedStep:
        """Queue the step on the device; its output is read with ``result()``."""
        return self.runner.launch(sched)
