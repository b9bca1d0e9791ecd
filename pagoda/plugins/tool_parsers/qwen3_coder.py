"""Qwen3-Coder tool calls, XML-like, with each value typed by the tool's JSON schema::

    <tool_call>
    <function=get_weather>
    <parameter=city>
    Paris
    </parameter>
    </function>
    </tool_call>

Each parameter streams once its value is finished.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from typing import Any

from pagoda.interfaces.tool_parser import ParsedToolCall, tool_schemas
from pagoda.plugins.tool_parsers._arguments import arguments_prefix
from pagoda.plugins.tool_parsers._scan import (
    INVALID,
    PENDING,
    ScanningToolParser,
    Status,
    Step,
    could_become,
    skip_ws,
)

TOOL_CALL = "<tool_call>"
FUNCTION = "<function="
PARAMETER = "<parameter="
END_PARAMETER = "</parameter>"
END_FUNCTION = "</function>"


def _schema_type(schema: dict | None) -> str | None:
    kind = (schema or {}).get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    return kind if isinstance(kind, str) else None


def convert_value(text: str, schema: dict | None) -> Any:
    """The parameter's text as the type its schema names; text that does not fit the type is
    kept as a string (the model's words are never dropped)."""
    kind = _schema_type(schema)
    if kind == "string":
        return text
    if text.strip().lower() in ("null", "none") and kind is not None:
        return None
    try:
        if kind == "integer":
            return int(text.strip())
        if kind == "number":
            number = float(text.strip())
            is_integral = number.is_integer() and not any(c in text for c in ".eE")
            return int(number) if is_integral else number
        if kind == "boolean":
            word = text.strip().lower()
            if word in ("true", "false"):
                return word == "true"
            return text
        if kind in ("object", "array"):
            try:
                return json.loads(text)
            except ValueError:
                return ast.literal_eval(text.strip())
        return json.loads(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


class Qwen3CoderToolParser(ScanningToolParser):
    """``<function=...>`` blocks, inside ``<tool_call>`` or on their own."""

    start_markers = (TOOL_CALL, FUNCTION)

    def scan_calls(self, text: str, start: int, request: Any) -> Iterator[Step]:
        pos = start
        while True:
            if text.startswith(TOOL_CALL, pos):
                pos = skip_ws(text, pos + len(TOOL_CALL))
            step = self._function(text, pos, request)
            yield step
            if step.status is not Status.OK:
                return
            found = [i for i in (text.find(m, step.end) for m in self.start_markers) if i >= 0]
            if not found:
                return
            pos = min(found)

    def _function(self, text: str, pos: int, request: Any) -> Step:
        if not text.startswith(FUNCTION, pos):
            return PENDING if could_become(text[pos:], FUNCTION) else INVALID
        name_end = text.find(">", pos)
        if name_end < 0:
            return PENDING
        name = text[pos + len(FUNCTION) : name_end].strip()
        if not name or not self.known(name, request):
            return INVALID
        properties = ((tool_schemas(request) or {}).get(name) or {}).get("properties") or {}
        pairs: list[tuple[str, Any]] = []
        pos = name_end + 1
        while True:
            pos = skip_ws(text, pos)
            if text.startswith(END_FUNCTION, pos):
                return self._step(name, pairs, closed=True, end=pos + len(END_FUNCTION))
            if not text.startswith(PARAMETER, pos):
                rest = text[pos:]
                if could_become(rest, PARAMETER) or could_become(rest, END_FUNCTION):
                    return self._step(name, pairs, closed=False)
                return INVALID
            key_end = text.find(">", pos)
            if key_end < 0:
                return self._step(name, pairs, closed=False)
            key = text[pos + len(PARAMETER) : key_end].strip()
            value_end, after = self._value_end(text, key_end + 1)
            if value_end is None:
                return self._step(name, pairs, closed=False)
            value = text[key_end + 1 : value_end]
            value = value.removeprefix("\n").removesuffix("\n")
            pairs.append((key, convert_value(value, properties.get(key))))
            pos = after

    @staticmethod
    def _value_end(text: str, pos: int) -> tuple[int | None, int]:
        """Where a value ends (``</parameter>``, or a missing one implied by the next
        parameter or the end of the function) and where scanning goes on."""
        ends = [(text.find(m, pos), m) for m in (END_PARAMETER, PARAMETER, END_FUNCTION)]
        ends = [(i, m) for i, m in ends if i >= 0]
        if not ends:
            return None, pos
        i, marker = min(ends)
        return i, i + len(END_PARAMETER) if marker == END_PARAMETER else i

    @staticmethod
    def _step(name: str, pairs: list[tuple[str, Any]], closed: bool, end: int = 0) -> Step:
        try:
            arguments = arguments_prefix(pairs, closed)
        except (TypeError, ValueError):
            return INVALID
        return Step(
            Status.OK if closed else Status.PARTIAL,
            ParsedToolCall(name, arguments, complete=closed),
            end,
        )
