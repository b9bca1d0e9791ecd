"""A custom tool parser: the model writes ``CALL name {json arguments}``, one call per line.

Use it with ``pagoda serve MODEL --enable-auto-tool-choice --tool-parser-plugin
my_tool_parser.py --tool-call-parser my_calls``.
"""

import json

from pagoda import hookimpl
from pagoda.interfaces import ToolParser
from pagoda.interfaces.tool_parser import ParsedToolCall, ParsedToolCalls

MARKER = "CALL "


class MyToolParser(ToolParser):
    """Implements only ``parse``; the base class derives the complete and the streaming
    extraction from it (so ``parse`` must be monotone: what it reports for a prefix of the
    output is a prefix of what it reports for the whole)."""

    def parse(self, text: str, request, final: bool) -> ParsedToolCalls:
        start = text.find(MARKER)
        if start < 0:
            # Hold back a partly generated marker ("CA") while streaming.
            held = next((n for n in range(len(MARKER), 0, -1) if text.endswith(MARKER[:n])), 0)
            return ParsedToolCalls(text if final else text[: len(text) - held])
        calls = []
        for line in text[start:].split("\n"):
            if not line.startswith(MARKER):
                break
            name, _, arguments = line[len(MARKER) :].partition(" ")
            if not arguments and not final:
                break  # the name may still be growing
            try:
                json.loads(arguments)
                complete = True
            except ValueError:
                complete = False
            if final and not complete:
                break
            calls.append(ParsedToolCall(name, arguments, complete))
        return ParsedToolCalls(text[:start], calls)


@hookimpl
def register_tool_parsers(register):
    register("my_calls", MyToolParser)
