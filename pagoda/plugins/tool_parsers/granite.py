"""IBM Granite 3.x tool calls: ``<|tool_call|>`` (3.0) or ``<tool_call>`` (3.1+) followed by a
JSON list of ``{"name": ..., "arguments": {...}}`` objects."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pagoda.plugins.tool_parsers._scan import ScanningToolParser, Step


class GraniteToolParser(ScanningToolParser):
    """The JSON list after the first tool-call marker."""

    start_markers = ("<|tool_call|>", "<tool_call>")
    needs_special_tokens = True

    def scan_calls(self, text: str, start: int, request: Any) -> Iterator[Step]:
        marker = next(m for m in self.start_markers if text.startswith(m, start))
        yield from self.call_list(text, start + len(marker), request)
