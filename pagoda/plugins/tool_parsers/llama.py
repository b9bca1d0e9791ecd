"""Llama 3.1 / 3.2 JSON tool calls: an optional ``<|python_tag|>``, then
``{"name": ..., "parameters": {...}}`` objects separated by ``;`` (the output must begin with
the tag or the object)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pagoda.plugins.tool_parsers._scan import ScanningToolParser, Status, Step, skip_ws

PYTHON_TAG = "<|python_tag|>"


class Llama3JsonToolParser(ScanningToolParser):
    """A JSON call at the very start of the output (after ``<|python_tag|>`` if present)."""

    start_markers = (PYTHON_TAG,)
    needs_special_tokens = True

    def find_start(self, text: str) -> int | None:
        pos = skip_ws(text, 0)
        if text.startswith("{", pos):
            return pos
        tag = text.find(PYTHON_TAG)
        return tag if tag >= 0 else None

    def scan_calls(self, text: str, start: int, request: Any) -> Iterator[Step]:
        pos = start + len(PYTHON_TAG) if text.startswith(PYTHON_TAG, start) else start
        while True:
            step = self.call_object(text, pos, request)
            yield step
            if step.status is not Status.OK:
                return
            pos = skip_ws(text, step.end)
            if not text.startswith(";", pos):
                return
            pos += 1
