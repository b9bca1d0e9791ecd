"""The tool-call parser contract (vLLM's ``ToolParser`` method names and arguments).

A parser turns the text a model generated into OpenAI tool calls, for a complete output
(:meth:`ToolParser.extract_tool_calls`) and step by step while streaming
(:meth:`ToolParser.extract_tool_calls_streaming`). One parser instance serves one request.

A subclass either overrides both ``extract_*`` methods (as a parser ported from vLLM does), or
implements only :meth:`ToolParser.parse`, which reads a whole text or any prefix of it; the
base class then derives both methods from it. Streaming is stateless: each step parses the
previous and the current text and sends the difference, so ``parse`` must be *monotone* — what
it reports for a prefix (content, calls, each call's arguments) is a prefix of what it reports
for any longer text. That is what makes a call's streamed argument fragments concatenate to
exactly the non-streaming arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pagoda.interfaces.messages import (
    DeltaFunctionCall,
    DeltaMessage,
    DeltaToolCall,
    ExtractedToolCallInformation,
    FunctionCall,
    ToolCall,
    make_tool_call_id,
)


@dataclass(slots=True)
class ParsedToolCall:
    """One call found by :meth:`ToolParser.parse`. ``arguments`` is the JSON text of the
    arguments; while ``complete`` is False it is only the part known so far (a prefix)."""

    name: str
    arguments: str
    complete: bool = True


@dataclass(slots=True)
class ParsedToolCalls:
    """Everything :meth:`ToolParser.parse` found in a text: the content before the calls and
    the calls, in order. Only the last call may be incomplete."""

    content: str
    calls: list[ParsedToolCall] = field(default_factory=list)


def get_vocab(tokenizer: Any) -> dict[str, int]:
    """The tokenizer's token -> id map, or {} when there is no tokenizer (text-only parsing)."""
    if tokenizer is None:
        return {}
    try:
        return dict(tokenizer.get_vocab())
    except Exception:
        return {}


def tool_schemas(request: Any) -> dict[str, dict] | None:
    """The request's tools as name -> JSON schema of the parameters, or None when the request
    names no tools (then any function name is accepted). ``request`` is any object with a
    ``tools`` attribute holding OpenAI tool dicts or pydantic models."""
    tools = getattr(request, "tools", None)
    if not tools:
        return None
    schemas: dict[str, dict] = {}
    for tool in tools:
        if hasattr(tool, "model_dump"):
            tool = tool.model_dump()
        function = tool.get("function") or {}
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            schemas[function["name"]] = function.get("parameters") or {}
    return schemas


class ToolParser:
    """Base class of tool-call parsers; one instance per request.

    :param tokenizer: the model's (HF) tokenizer, or None. Parsers look special tokens up in
        its vocab when present and otherwise work on the text alone.
    """

    #: Shape of the ids given to calls ("mistral": 9 alphanumerics).
    tool_call_id_kind: Literal["random", "mistral"] = "random"
    #: True when the markers this parser reads are special tokens of its model family, so the
    #: text must be detokenized with ``skip_special_tokens=False`` (see :meth:`adjust_request`).
    needs_special_tokens: bool = False

    def __init__(self, tokenizer: Any = None) -> None:
        self.model_tokenizer = tokenizer
        self.vocab = get_vocab(tokenizer)

    def adjust_request(self, request: Any) -> Any:
        """Adjust the chat request before generation; returns it. The default keeps special
        tokens in the output text when this parser's markers are special tokens and the
        request has tools."""
        if (
            self.needs_special_tokens
            and getattr(request, "tools", None)
            and getattr(request, "tool_choice", "auto") != "none"
            and hasattr(request, "skip_special_tokens")
        ):
            request.skip_special_tokens = False
        return request

    def parse(self, text: str, request: Any, final: bool) -> ParsedToolCalls:
        """Read ``text`` (with ``final=False``, a prefix of an output still being generated).

        With ``final=False`` the content excludes anything that may still turn out to start a
        call (a partly generated marker), and a call appears once its name is known, with the
        arguments known so far. With ``final=True`` only complete calls count. Must be
        monotone (see the module docstring) and must not raise on any input.
        """
        raise NotImplementedError

    def extract_tool_calls(self, model_output: str, request: Any) -> ExtractedToolCallInformation:
        """The tool calls in a complete model output, and the content around them.

        Malformed output (broken JSON, an unknown function name, a truncated call) gives plain
        content, or the calls that are whole; never an exception.
        """
        try:
            parsed = self.parse(model_output, request, final=True)
        except Exception:
            parsed = ParsedToolCalls(model_output)
        calls = [c for c in parsed.calls if c.complete]
        if not calls:
            return ExtractedToolCallInformation(tools_called=False, content=model_output)
        return ExtractedToolCallInformation(
            tools_called=True,
            tool_calls=[
                ToolCall(
                    id=make_tool_call_id(self.tool_call_id_kind),
                    function=FunctionCall(name=c.name, arguments=c.arguments),
                )
                for c in calls
            ],
            content=parsed.content if parsed.content.strip() else None,
        )

    def extract_tool_calls_streaming(
        self,
        previous_text: str,
        current_text: str,
        delta_text: str,
        previous_token_ids: Sequence[int],
        current_token_ids: Sequence[int],
        delta_token_ids: Sequence[int],
        request: Any,
    ) -> DeltaMessage | None:
        """What one streaming step adds: content, a new call (its first delta carries index,
        id, type and name) and/or argument fragments of calls already begun. None when the
        step adds nothing yet (e.g. it holds a partly generated marker back)."""
        before = self._parse_streaming(previous_text, request)
        after = self._parse_streaming(current_text, request)
        content = _suffix(before.content, after.content)
        deltas: list[DeltaToolCall] = []
        for index, call in enumerate(after.calls):
            if index >= len(before.calls):
                deltas.append(
                    DeltaToolCall(
                        index=index,
                        id=make_tool_call_id(self.tool_call_id_kind),
                        type="function",
                        function=DeltaFunctionCall(name=call.name, arguments=call.arguments),
                    )
                )
                continue
            old = before.calls[index]
            fragment = _suffix(old.arguments, call.arguments) if old.name == call.name else ""
            if fragment:
                deltas.append(
                    DeltaToolCall(index=index, function=DeltaFunctionCall(arguments=fragment))
                )
        if not content and not deltas:
            return None
        return DeltaMessage(content=content or None, tool_calls=deltas)

    def _parse_streaming(self, text: str, request: Any) -> ParsedToolCalls:
        try:
            parsed = self.parse(text, request, final=False)
        except Exception:
            return ParsedToolCalls("")
        # Whitespace alone is held back: it is content only if text follows it.
        if not parsed.content.strip():
            parsed.content = ""
        return parsed


def _suffix(old: str, new: str) -> str:
    """What ``new`` adds to ``old`` (nothing when ``old`` is not a prefix of it)."""
    return new[len(old) :] if new.startswith(old) else ""
