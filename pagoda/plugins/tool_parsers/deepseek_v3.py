"""DeepSeek V3 / R1-0528 and V3.1 tool calls, written with the family's special tokens::

    <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather
    ```json
    {"city": "Paris"}
    ```<｜tool▁call▁end｜><｜tool▁calls▁end｜>

and V3.1's shorter form::

    <｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{"city": "Paris"}<｜tool▁call▁end｜>
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from pagoda.plugins.tool_parsers._scan import (
    INVALID,
    PENDING,
    ScanningToolParser,
    Status,
    Step,
    could_become,
    json_arguments,
)

CALLS_BEGIN = "<｜tool▁calls▁begin｜>"
CALL_BEGIN = "<｜tool▁call▁begin｜>"
SEP = "<｜tool▁sep｜>"
_FENCE = re.compile(r"```(?:json)?[ \t]*\n")


class DeepSeekV3ToolParser(ScanningToolParser):
    """Every ``<｜tool▁call▁begin｜>`` block after the calls-begin token."""

    start_markers = (CALLS_BEGIN, CALL_BEGIN)
    needs_special_tokens = True

    def scan_calls(self, text: str, start: int, request: Any) -> Iterator[Step]:
        pos = start
        while True:
            if text.startswith(CALLS_BEGIN, pos):
                pos += len(CALLS_BEGIN)
            begin = text.find(CALL_BEGIN, pos)
            if begin < 0:
                if could_become(text[pos:].lstrip(), CALL_BEGIN):
                    yield PENDING
                return
            step = self._call(text, begin + len(CALL_BEGIN), request)
            yield step
            if step.status is not Status.OK:
                return
            pos = step.end

    def _call(self, text: str, pos: int, request: Any) -> Step:
        sep = text.find(SEP, pos)
        if sep < 0:
            return PENDING
        kind = text[pos:sep].strip()
        after = sep + len(SEP)
        if kind == "function":
            newline = text.find("\n", after)
            if newline < 0:
                return PENDING
            name = text[after:newline].strip()
            fence = _FENCE.match(text, newline + 1)
            if fence is None:
                rest = text[newline + 1 :]
                return PENDING if could_become(rest, "```json\n") else INVALID
            args_at = fence.end()
        else:
            name, args_at = kind, after
        if not name or not self.known(name, request):
            return INVALID
        return json_arguments(text, args_at, name)
