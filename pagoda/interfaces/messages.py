"""The message types parsers return: tool calls and streaming deltas, in the OpenAI shape.

These are API-edge types (the server serialises them into chat-completion responses), so they
are pydantic models. Names and fields follow vLLM's ``protocol.py`` so ported parsers work.
"""

from __future__ import annotations

import secrets
import string
from typing import Literal

from pydantic import BaseModel, Field, model_validator

_ALPHANUMERIC = string.ascii_letters + string.digits


def make_tool_call_id(kind: Literal["random", "mistral"] = "random") -> str:
    """A fresh tool-call id: ``call_`` and 24 hex digits, or Mistral's 9 alphanumerics
    (Mistral's chat templates reject any other shape)."""
    if kind == "mistral":
        return "".join(secrets.choice(_ALPHANUMERIC) for _ in range(9))
    return f"call_{secrets.token_hex(12)}"


class FunctionCall(BaseModel):
    """A complete function call: its name and its arguments as a JSON text."""

    name: str
    arguments: str


class ToolCall(BaseModel):
    """One complete tool call of a (non-streaming) assistant message."""

    id: str = Field(default_factory=make_tool_call_id)
    type: Literal["function"] = "function"
    function: FunctionCall


class DeltaFunctionCall(BaseModel):
    """A piece of a function call: the name (first delta only) and/or an arguments fragment."""

    name: str | None = None
    arguments: str | None = None


class DeltaToolCall(BaseModel):
    """A piece of one tool call in a streaming delta. A call's first delta carries ``index``,
    ``id``, ``type`` and ``function.name``; later ones carry only ``index`` and an arguments
    fragment. Concatenating a call's fragments gives its complete arguments text."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: DeltaFunctionCall | None = None


class DeltaMessage(BaseModel):
    """What one streaming step adds to the assistant message.

    ``reasoning_content`` (DeepSeek's name) and ``reasoning`` (vLLM's newer name) always hold
    the same text: setting either one sets both.
    """

    role: str | None = None
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[DeltaToolCall] = Field(default_factory=list)

    @model_validator(mode="after")
    def _mirror_reasoning(self) -> DeltaMessage:
        if self.reasoning is None:
            self.reasoning = self.reasoning_content
        elif self.reasoning_content is None:
            self.reasoning_content = self.reasoning
        return self


class ExtractedToolCallInformation(BaseModel):
    """What a tool parser found in a complete model output.

    ``tools_called`` is True exactly when ``tool_calls`` is non-empty; ``content`` is the text
    that is not part of a call (None when there is none).
    """

    tools_called: bool
    tool_calls: list[ToolCall] = Field(default_factory=list)
    content: str | None = None
