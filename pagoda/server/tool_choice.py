"""``tool_choice`` "required" and named: the JSON schema guided decoding enforces, and the
parsers that read the calls back out of the constrained output.

Named (``{"type": "function", "function": {"name": N}}``): the model writes N's arguments
object, constrained by N's ``parameters`` schema. "required": it writes a JSON array of
``{"name": ..., "parameters": {...}}`` objects (vLLM's shape), each item constrained to one of
the tools (``anyOf``), at least one item, at most one without ``parallel_tool_calls``.
"""

from __future__ import annotations

import json
from typing import Any

from pagoda.interfaces.guided import GuidedDecodingParams
from pagoda.interfaces.tool_parser import ParsedToolCall, ParsedToolCalls, ToolParser
from pagoda.sampling_params import SamplingParams
from pagoda.server.errors import APIError
from pagoda.server.protocol import ChatCompletionRequest, NamedToolChoice

_ANY_OBJECT: dict[str, Any] = {"type": "object"}


def named_schema(req: ChatCompletionRequest, name: str) -> dict[str, Any]:
    """The arguments schema of the function ``tool_choice`` names."""
    for tool in req.tools or []:
        if tool.function.name == name:
            return tool.function.parameters or _ANY_OBJECT
    raise APIError(400, f"tool_choice names an unknown function {name!r}", param="tool_choice")


def required_schema(req: ChatCompletionRequest) -> dict[str, Any]:
    """A non-empty array of calls, each ``{"name": one tool, "parameters": its arguments}``."""
    items = [
        {
            "type": "object",
            "properties": {
                "name": {"type": "string", "enum": [tool.function.name]},
                "parameters": tool.function.parameters or _ANY_OBJECT,
            },
            "required": ["name", "parameters"],
        }
        for tool in req.tools or []
    ]
    schema: dict[str, Any] = {
        "type": "array",
        "minItems": 1,
        "items": items[0] if len(items) == 1 else {"anyOf": items},
    }
    if req.parallel_tool_calls is False:
        schema["maxItems"] = 1
    return schema


def constrain(req: ChatCompletionRequest, params: SamplingParams) -> None:
    """Set ``params.guided_decoding`` for a "required" or named tool_choice (a 400 when the
    request already has a structured-output constraint)."""
    choice = req.effective_tool_choice()
    if choice in ("none", "auto"):
        return
    label = "required" if choice == "required" else "named"
    if params.guided_decoding is not None:
        raise APIError(
            400,
            f"tool_choice {label!r} cannot be combined with a structured-output constraint "
            "(response_format, guided_*, structured_outputs)",
            param="tool_choice",
        )
    if isinstance(choice, NamedToolChoice):
        schema = named_schema(req, choice.function.name)
    else:
        schema = required_schema(req)
    params.guided_decoding = GuidedDecodingParams(json=schema)


class NamedToolCallParser(ToolParser):
    """Reads the output of a named tool_choice: the whole text is the arguments object."""

    def __init__(self, tokenizer: Any, name: str) -> None:
        super().__init__(tokenizer)
        self.name = name

    def parse(self, text: str, request: Any, final: bool) -> ParsedToolCalls:
        arguments = text.lstrip()
        if not arguments:
            return ParsedToolCalls("")
        return ParsedToolCalls("", [ParsedToolCall(self.name, arguments, complete=final)])


class RequiredToolCallParser(ToolParser):
    """Reads the output of tool_choice "required": a JSON array of ``{"name", "parameters"}``.

    A call is reported once its object is complete (then its arguments never change, so
    streaming stays monotone); each call's arguments are its ``parameters`` re-serialised.
    """

    _decoder = json.JSONDecoder()

    def parse(self, text: str, request: Any, final: bool) -> ParsedToolCalls:
        pos = _skip(text, 0, " \t\r\n")
        if pos >= len(text) or text[pos] != "[":
            return ParsedToolCalls("" if not final else text)
        pos += 1
        calls: list[ParsedToolCall] = []
        while True:
            pos = _skip(text, pos, " \t\r\n,")
            if pos >= len(text) or text[pos] != "{":
                break
            try:
                item, pos = self._decoder.raw_decode(text, pos)
            except ValueError:
                break
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                break
            arguments = json.dumps(item.get("parameters", {}), ensure_ascii=False)
            calls.append(ParsedToolCall(item["name"], arguments))
        return ParsedToolCalls("", calls)


def _skip(text: str, pos: int, chars: str) -> int:
    while pos < len(text) and text[pos] in chars:
        pos += 1
    return pos
