"""What the built-in tool parsers share: a driver that turns a sequence of scanned calls into
:class:`ParsedToolCalls`, and scanners for JSON values and JSON call objects over text that
may end anywhere (a streaming prefix).

Each parser yields :class:`Step`s, one per call, from :meth:`ScanningToolParser.scan_calls`:

- ``OK``: a whole call, ending at ``end``;
- ``PARTIAL``: the text ends inside a call (``call`` is None until the name is known);
- ``INVALID``: the call can never parse (broken JSON, unknown name, wrong shape).

The driver's rules: content is the text before the first call; scanning stops at the first
step that is not ``OK``; an invalid first call makes the whole text content (nothing of it
was streamed as a call); with ``final=True`` no whole call means the whole text is content.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

from pagoda.interfaces.tool_parser import (
    ParsedToolCall,
    ParsedToolCalls,
    ToolParser,
    tool_schemas,
)


class Status(Enum):
    OK = "ok"
    PARTIAL = "partial"
    INVALID = "invalid"


@dataclass(slots=True)
class Step:
    status: Status
    call: ParsedToolCall | None = None
    end: int = 0


INVALID = Step(Status.INVALID)
PENDING = Step(Status.PARTIAL)


def held_back(text: str, markers: tuple[str, ...]) -> str:
    """``text`` without its longest suffix that is the beginning of one of ``markers``."""
    cut = len(text)
    for marker in markers:
        for n in range(min(len(marker) - 1, len(text)), 0, -1):
            if text.endswith(marker[:n]):
                cut = min(cut, len(text) - n)
                break
    return text[:cut]


def could_become(text: str, word: str) -> bool:
    """Whether ``text`` is a (possibly empty) beginning of ``word``."""
    return word.startswith(text)


def skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def json_value_end(text: str, pos: int) -> int | None:
    """The end of the JSON value starting at ``pos`` (no leading whitespace), or None when
    the text ends first. Only brackets and strings are tracked; ``json.loads`` validates."""
    if pos >= len(text):
        return None
    first = text[pos]
    if first == '"':
        i = pos + 1
        while i < len(text):
            if text[i] == "\\":
                i += 2
                continue
            if text[i] == '"':
                return i + 1
            i += 1
        return None
    if first not in "{[":
        match = re.compile(r"[^\s,\]}]*").match(text, pos)
        end = match.end() if match else pos
        return end if end < len(text) else None
    depth, i, in_string = 0, pos, False
    while i < len(text):
        ch = text[i]
        if in_string:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def json_arguments(text: str, pos: int, name: str) -> Step:
    """The call ``name`` whose arguments are the JSON object at ``pos`` (after whitespace);
    its ``arguments`` is the object's text exactly as generated."""
    pos = skip_ws(text, pos)
    end = json_value_end(text, pos)
    if end is None:
        if pos < len(text) and text[pos] != "{":
            return INVALID
        return Step(Status.PARTIAL, ParsedToolCall(name, text[pos:], complete=False))
    try:
        value = json.loads(text[pos:end])
    except ValueError:
        return INVALID
    if not isinstance(value, dict):
        return INVALID
    return Step(Status.OK, ParsedToolCall(name, text[pos:end]), end)


_HEADER = re.compile(
    r'\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"(?:arguments|parameters)"\s*:\s*'
)


class ScanningToolParser(ToolParser):
    """A tool parser described by where its calls start and how to scan them."""

    #: Markers that start the calls; content before the first one is the message content.
    start_markers: tuple[str, ...] = ()

    def find_start(self, text: str) -> int | None:
        """Where the calls start (default: the first start marker), or None."""
        found = [i for i in (text.find(m) for m in self.start_markers) if i >= 0]
        return min(found) if found else None

    def scan_calls(self, text: str, start: int, request: Any) -> Iterator[Step]:
        """Yield one :class:`Step` per call, from ``start`` on."""
        raise NotImplementedError

    def parse(self, text: str, request: Any, final: bool) -> ParsedToolCalls:
        start = self.find_start(text)
        if start is None:
            return ParsedToolCalls(text if final else held_back(text, self.start_markers))
        calls: list[ParsedToolCall] = []
        for step in self.scan_calls(text, start, request):
            if step.status is Status.OK and step.call is not None:
                calls.append(step.call)
                continue
            if step.status is Status.INVALID and not calls:
                return ParsedToolCalls(text)
            if step.status is Status.PARTIAL and step.call is not None and not final:
                calls.append(step.call)
            break
        if final and not calls:
            return ParsedToolCalls(text)
        return ParsedToolCalls(text[:start], calls)

    def known(self, name: str, request: Any) -> bool:
        """Whether the request offers a function of this name (any name when it lists none)."""
        schemas = tool_schemas(request)
        return schemas is None or name in schemas

    def call_object(self, text: str, pos: int, request: Any) -> Step:
        """A call written as a JSON object ``{"name": ..., "arguments"|"parameters": {...}}``
        at ``pos`` (after whitespace). When "name" comes first the arguments stream as
        generated; otherwise the call appears whole once the object is complete."""
        pos = skip_ws(text, pos)
        if pos >= len(text):
            return PENDING
        if text[pos] != "{":
            return INVALID
        header = _HEADER.match(text, pos)
        end = json_value_end(text, pos)
        if header is not None:
            name = json.loads(header.group(1))
            if not self.known(name, request):
                return INVALID
            step = json_arguments(text, header.end(), name)
            if step.status is not Status.OK:
                return step
            if end is None:
                assert step.call is not None
                step.call.complete = False
                return Step(Status.PARTIAL, step.call)
            try:
                json.loads(text[pos:end])
            except ValueError:
                return INVALID
            return Step(Status.OK, step.call, end)
        if end is None:
            return PENDING
        try:
            obj = json.loads(text[pos:end])
        except ValueError:
            return INVALID
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            return INVALID
        arguments = obj.get("arguments", obj.get("parameters", {}))
        if not isinstance(arguments, dict) or not self.known(obj["name"], request):
            return INVALID
        return Step(
            Status.OK, ParsedToolCall(obj["name"], json.dumps(arguments, ensure_ascii=False)), end
        )

    def call_list(self, text: str, pos: int, request: Any) -> Iterator[Step]:
        """Calls written as a JSON list of call objects at ``pos`` (after whitespace)."""
        pos = skip_ws(text, pos)
        if pos >= len(text):
            yield PENDING
            return
        if text[pos] != "[":
            yield INVALID
            return
        pos += 1
        while True:
            step = self.call_object(text, pos, request)
            yield step
            if step.status is not Status.OK:
                return
            pos = skip_ws(text, step.end)
            if pos >= len(text) or text[pos] != ",":
                return
            pos += 1
