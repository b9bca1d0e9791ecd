"""InternLM2 / 2.5 tool calls: ``<|action_start|><|plugin|>`` then
``{"name": ..., "parameters": {...}}`` then ``<|action_end|>``, repeatable."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pagoda.plugins.tool_parsers._scan import ScanningToolParser, Status, Step

ACTION_START = "<|action_start|><|plugin|>"


class Internlm2ToolParser(ScanningToolParser):
    """Each plugin action's JSON object."""

    start_markers = (ACTION_START,)
    needs_special_tokens = True

    def scan_calls(self, text: str, start: int, request: Any) -> Iterator[Step]:
        pos = start
        while (pos := text.find(ACTION_START, pos)) >= 0:
            step = self.call_object(text, pos + len(ACTION_START), request)
            yield step
            if step.status is not Status.OK:
                return
            pos = step.end
