"""One choice's generated text split into reasoning, content and tool calls.

The reasoning parser (``--reasoning-parser``) sees the whole output; the tool parser (the
server's ``--tool-call-parser`` for tool_choice "auto", or the reader of a "required" or
named choice) sees only the content, i.e. what follows the reasoning::

    output text ──reasoning parser──> reasoning
                                  └─> content ──tool parser──> content before the calls
                                                           └─> tool calls

Streaming feeds each step's delta through the same two stages. When the output finishes,
the non-streaming result of the whole text is compared with what was sent and the rest is
flushed (a marker held back at the very end, an argument tail), so concatenated deltas equal
the non-streaming message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pagoda.interfaces.messages import DeltaFunctionCall, DeltaToolCall, ToolCall
from pagoda.interfaces.reasoning import ReasoningParser
from pagoda.interfaces.tool_parser import ToolParser
from pagoda.server.protocol import DeltaMessage


@dataclass(slots=True)
class ParsedMessage:
    """A complete assistant message: ``reasoning`` and ``content`` are None when empty."""

    content: str | None
    reasoning: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)


@dataclass(slots=True)
class _SentCall:
    name: str
    arguments: str = ""


class ChatOutputParser:
    """Parses one choice's output, whole (:meth:`parse`) or step by step (:meth:`step`).

    :param max_calls: keep at most this many tool calls (1 when ``parallel_tool_calls`` is
        false), None for no limit.
    """

    def __init__(
        self,
        request: Any,
        reasoning_parser: ReasoningParser | None = None,
        tool_parser: ToolParser | None = None,
        max_calls: int | None = None,
    ) -> None:
        self.request = request
        self.reasoning_parser = reasoning_parser
        self.tool_parser = tool_parser
        self.max_calls = max_calls
        self.text = ""
        self.token_ids: list[int] = []
        self.content_text = ""  # the content so far, as the tool parser has seen it
        self.sent_reasoning = ""
        self.sent_content = ""
        self.sent_calls: list[_SentCall] = []

    @property
    def active(self) -> bool:
        """Whether any parser is in play (else the output is plain content)."""
        return self.reasoning_parser is not None or self.tool_parser is not None

    # --- complete output ---

    def parse(self, text: str) -> ParsedMessage:
        """The message of a complete output text."""
        reasoning: str | None = None
        content: str | None = text
        if self.reasoning_parser is not None:
            reasoning, content = self.reasoning_parser.extract_reasoning_content(text, self.request)
        if self.tool_parser is None or not content:
            return ParsedMessage(content, reasoning)
        info = self.tool_parser.extract_tool_calls(content, self.request)
        if not info.tools_called:
            return ParsedMessage(content, reasoning)
        calls = info.tool_calls[: self.max_calls] if self.max_calls else info.tool_calls
        return ParsedMessage(info.content, reasoning, list(calls))

    # --- streaming ---

    def step(
        self, delta_text: str, delta_ids: Sequence[int], finished: bool
    ) -> DeltaMessage | None:
        """What this step adds to the message (None: nothing yet). With ``finished``, also
        whatever the complete output has that the deltas so far have not sent."""
        previous_text, previous_ids = self.text, list(self.token_ids)
        self.text += delta_text
        self.token_ids.extend(delta_ids)
        reasoning, content = None, delta_text
        if self.reasoning_parser is not None and delta_text:
            delta = self.reasoning_parser.extract_reasoning_content_streaming(
                previous_text, self.text, delta_text, previous_ids, self.token_ids, delta_ids
            )
            reasoning = delta.reasoning_content if delta is not None else None
            content = delta.content if delta is not None else None
        calls: list[DeltaToolCall] = []
        if self.tool_parser is not None and content:
            previous_content = self.content_text
            self.content_text += content
            delta = self.tool_parser.extract_tool_calls_streaming(
                previous_content,
                self.content_text,
                content,
                previous_ids,
                self.token_ids,
                delta_ids,
                self.request,
            )
            content = delta.content if delta is not None else None
            calls = self._keep(delta.tool_calls if delta is not None else [])
        self._record(reasoning, content, calls)
        out = _delta(reasoning, content, calls)
        if finished:
            out = _merge(out, self._flush())
        return out

    @property
    def called_tools(self) -> bool:
        """Whether a streamed tool call has been sent."""
        return bool(self.sent_calls)

    def _keep(self, calls: list[DeltaToolCall]) -> list[DeltaToolCall]:
        if self.max_calls is None:
            return list(calls)
        return [c for c in calls if c.index < self.max_calls]

    def _record(
        self, reasoning: str | None, content: str | None, calls: list[DeltaToolCall]
    ) -> None:
        self.sent_reasoning += reasoning or ""
        self.sent_content += content or ""
        for call in calls:
            fn = call.function or DeltaFunctionCall()
            if call.index >= len(self.sent_calls):
                self.sent_calls.append(_SentCall(fn.name or ""))
            self.sent_calls[call.index].arguments += fn.arguments or ""

    def _flush(self) -> DeltaMessage | None:
        """The part of the complete message that the deltas have not sent."""
        final = self.parse(self.text)
        reasoning = _rest(self.sent_reasoning, final.reasoning or "")
        content = _rest(self.sent_content, final.content or "")
        calls: list[DeltaToolCall] = []
        for index, call in enumerate(final.tool_calls):
            if index < len(self.sent_calls):
                sent = self.sent_calls[index]
                if sent.name != call.function.name:
                    continue
                tail = _rest(sent.arguments, call.function.arguments)
                if tail:
                    calls.append(
                        DeltaToolCall(index=index, function=DeltaFunctionCall(arguments=tail))
                    )
            else:
                calls.append(
                    DeltaToolCall(
                        index=index,
                        id=call.id,
                        type="function",
                        function=DeltaFunctionCall(
                            name=call.function.name, arguments=call.function.arguments
                        ),
                    )
                )
        self._record(reasoning, content, calls)
        return _delta(reasoning, content, calls)


def _rest(sent: str, full: str) -> str | None:
    """What ``full`` adds to ``sent`` (None when nothing, or when ``sent`` is no prefix)."""
    if len(full) > len(sent) and full.startswith(sent):
        return full[len(sent) :]
    return None


def _delta(
    reasoning: str | None, content: str | None, calls: list[DeltaToolCall]
) -> DeltaMessage | None:
    if not reasoning and not content and not calls:
        return None
    return DeltaMessage(
        reasoning_content=reasoning or None,
        reasoning=reasoning or None,
        content=content or None,
        tool_calls=calls or None,
    )


def _merge(first: DeltaMessage | None, second: DeltaMessage | None) -> DeltaMessage | None:
    """One delta holding both (reasoning, then content, then calls, in order)."""
    if first is None or second is None:
        return first or second

    def cat(a: str | None, b: str | None) -> str | None:
        return (a or "") + (b or "") or None

    reasoning = cat(first.reasoning_content, second.reasoning_content)
    return DeltaMessage(
        reasoning_content=reasoning,
        reasoning=reasoning,
        content=cat(first.content, second.content),
        tool_calls=(first.tool_calls or []) + (second.tool_calls or []) or None,
    )
