"""Hermes / Qwen2.5 / Qwen3 tool calls, repeated for parallel calls, after optional content::

<tool_call>{"name": ..., "arguments": {...}}</tool_call>
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pagoda.plugins.tool_parsers._scan import ScanningToolParser, Status, Step


class Hermes2ProToolParser(ScanningToolParser):
    """Reads each ``<tool_call>`` block's JSON object; text after the last call is dropped."""

    start_markers = ("<tool_call>",)

    def scan_calls(self, text: str, start: int, request: Any) -> Iterator[Step]:
        pos = start
        while (pos := text.find("<tool_call>", pos)) >= 0:
            step = self.call_object(text, pos + len("<tool_call>"), request)
            yield step
            if step.status is not Status.OK:
                return
            pos = step.end
