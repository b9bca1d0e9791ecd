"""Pythonic tool calls (Llama 3.2 / 4, ToolACE): a Python list of calls with keyword
arguments, ``[get_weather(city='Paris', unit='celsius'), get_time()]``.

Values are read with :func:`ast.literal_eval` (literals only, nothing is evaluated) and
written as JSON; each keyword value streams once it is finished.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from typing import Any

from pagoda.interfaces.tool_parser import ParsedToolCall
from pagoda.plugins.tool_parsers._arguments import arguments_prefix
from pagoda.plugins.tool_parsers._scan import (
    INVALID,
    PENDING,
    ScanningToolParser,
    Status,
    Step,
    skip_ws,
)

_NAME = re.compile(r"[A-Za-z_][\w.]*")
_KEY = re.compile(r"[A-Za-z_]\w*")
_CLOSE = {"(": ")", "[": "]", "{": "}"}


def python_value_end(text: str, pos: int) -> int | None:
    """Index of the ``,`` or ``)`` that ends the Python expression starting at ``pos`` (at
    bracket depth 0, outside strings), or None when the text ends first."""
    stack: list[str] = []
    i = pos
    while i < len(text):
        ch = text[i]
        if ch in "'\"":
            quote = ch * 3 if text.startswith(ch * 3, i) else ch
            i += len(quote)
            while i < len(text) and not text.startswith(quote, i):
                i += 2 if text[i] == "\\" else 1
            if i >= len(text):
                return None
            i += len(quote)
            continue
        if ch in _CLOSE:
            stack.append(_CLOSE[ch])
        elif stack and ch == stack[-1]:
            stack.pop()
        elif not stack and ch in ",)":
            return i
        i += 1
    return None


class PythonicToolParser(ScanningToolParser):
    """The output must begin with the list (after whitespace)."""

    def find_start(self, text: str) -> int | None:
        pos = skip_ws(text, 0)
        return pos if text.startswith("[", pos) else None

    def scan_calls(self, text: str, start: int, request: Any) -> Iterator[Step]:
        pos = start + 1
        while True:
            step = self._call(text, skip_ws(text, pos), request)
            yield step
            if step.status is not Status.OK:
                return
            pos = skip_ws(text, step.end)
            if not text.startswith(",", pos):
                return
            pos += 1

    def _call(self, text: str, pos: int, request: Any) -> Step:
        match = _NAME.match(text, pos)
        if pos >= len(text) or (match and match.end() == len(text)):
            return PENDING
        if not match or not text.startswith("(", match.end()):
            return INVALID
        name = match.group()
        if not self.known(name, request):
            return INVALID
        pairs: list[tuple[str, Any]] = []
        pos = match.end() + 1
        while True:
            pos = skip_ws(text, pos)
            if text.startswith(")", pos):
                return self._step(name, pairs, closed=True, end=pos + 1)
            key = _KEY.match(text, pos)
            value_at = skip_ws(text, key.end()) if key else pos
            if pos >= len(text) or (key and value_at >= len(text)):
                return self._step(name, pairs, closed=False)
            if not key or not text.startswith("=", value_at) or text.startswith("==", value_at):
                return INVALID
            end = python_value_end(text, value_at + 1)
            if end is None:
                return self._step(name, pairs, closed=False)
            try:
                value = ast.literal_eval(text[value_at + 1 : end].strip())
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                return INVALID
            pairs.append((key.group(), value))
            pos = end + 1 if text[end] == "," else end

    @staticmethod
    def _step(name: str, pairs: list[tuple[str, Any]], closed: bool, end: int = 0) -> Step:
        try:
            arguments = arguments_prefix(pairs, closed)
        except (TypeError, ValueError):
            return INVALID
        call = ParsedToolCall(name, arguments, complete=closed)
        return Step(Status.OK if closed else Status.PARTIAL, call, end)
