"""Mistral tool calls, in both of the family's formats:

- ``[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]`` (tokenizer v3 to v7);
- ``[TOOL_CALLS]name[ARGS]{...}``, repeated per call (tokenizer v11+; ``[CALL_ID]id`` before
  ``[ARGS]`` is skipped).

Call ids are Mistral's 9 alphanumerics, which its chat templates require.
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
    json_arguments,
    skip_ws,
)

TOOL_CALLS = "[TOOL_CALLS]"
ARGS = "[ARGS]"
CALL_ID = "[CALL_ID]"
_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


class MistralToolParser(ScanningToolParser):
    """Reads either format after ``[TOOL_CALLS]``."""

    start_markers = (TOOL_CALLS,)
    tool_call_id_kind = "mistral"
    needs_special_tokens = True

    def scan_calls(self, text: str, start: int, request: Any) -> Iterator[Step]:
        pos = skip_ws(text, start + len(TOOL_CALLS))
        if pos >= len(text):
            yield PENDING
        elif text[pos] == "[" and not text.startswith(ARGS, pos):
            yield from self.call_list(text, pos, request)
        else:
            yield from self._named_calls(text, start, request)

    def _named_calls(self, text: str, pos: int, request: Any) -> Iterator[Step]:
        while text.startswith(TOOL_CALLS, pos):
            step = self._named_call(text, pos + len(TOOL_CALLS), request)
            yield step
            if step.status is not Status.OK:
                return
            pos = skip_ws(text, step.end)

    def _named_call(self, text: str, pos: int, request: Any) -> Step:
        match = _NAME.match(text, pos)
        name_end = match.end() if match else pos
        if name_end == len(text):
            return PENDING
        if not match or not self.known(match.group(), request):
            return INVALID
        rest = text[name_end:]
        if text.startswith(CALL_ID, name_end):
            args_at = text.find(ARGS, name_end)
            if args_at < 0:
                return PENDING
        elif ARGS.startswith(rest) and len(rest) < len(ARGS):
            return PENDING
        elif text.startswith(ARGS, name_end):
            args_at = name_end
        else:
            return INVALID
        return json_arguments(text, args_at + len(ARGS), match.group())
