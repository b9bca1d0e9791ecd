"""The reasoning parser contract (vLLM's ``ReasoningParser`` method names and arguments).

A reasoning parser splits what a model generated into its reasoning (``<think>...</think>``
and the like) and the answer (content), for a complete output and step by step while
streaming; and tells from token ids whether the reasoning has ended (guided decoding and tool
parsing apply only to what follows it). One instance serves one request.

A subclass either overrides the ``extract_*`` methods (as one ported from vLLM does), or
implements only :meth:`ReasoningParser.parse`, from which the base class derives both; as for
tool parsers, ``parse`` must be monotone over prefixes, so streamed deltas concatenate to
exactly the non-streaming reasoning and content.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pagoda.interfaces.messages import DeltaMessage
from pagoda.interfaces.tool_parser import get_vocab


@dataclass(slots=True)
class ParsedReasoning:
    """The reasoning and the content found in a text (either may be empty)."""

    reasoning: str
    content: str


class ReasoningParser:
    """Base class of reasoning parsers.

    :param tokenizer: the model's (HF) tokenizer, or None. Marker tokens are looked up in its
        vocab when present; otherwise the parser works on decoded text.
    """

    #: True when the markers are special tokens, so the text must be detokenized with
    #: ``skip_special_tokens=False`` (see :meth:`adjust_request`).
    needs_special_tokens: bool = False

    def __init__(self, tokenizer: Any = None) -> None:
        self.model_tokenizer = tokenizer
        self.vocab = get_vocab(tokenizer)

    def adjust_request(self, request: Any) -> Any:
        """Adjust the chat request before generation; returns it (keeps special tokens in the
        output text when this parser's markers are special tokens)."""
        if self.needs_special_tokens and hasattr(request, "skip_special_tokens"):
            request.skip_special_tokens = False
        return request

    def parse(self, text: str, final: bool) -> ParsedReasoning:
        """Split ``text`` (with ``final=False``, a prefix of an output still being generated,
        from which a partly generated marker is held back). Monotone; never raises."""
        raise NotImplementedError

    def is_reasoning_end(self, input_ids: Sequence[int]) -> bool:
        """Whether the reasoning has ended within these (generated) token ids."""
        raise NotImplementedError

    def extract_content_ids(self, input_ids: Sequence[int]) -> list[int]:
        """The token ids after the end of the reasoning ([] while it has not ended)."""
        raise NotImplementedError

    def extract_reasoning_content(
        self, model_output: str, request: Any
    ) -> tuple[str | None, str | None]:
        """``(reasoning, content)`` of a complete output; None for a part that is empty."""
        try:
            parsed = self.parse(model_output, final=True)
        except Exception:
            return None, model_output
        return parsed.reasoning or None, parsed.content or None

    def extract_reasoning_content_streaming(
        self,
        previous_text: str,
        current_text: str,
        delta_text: str,
        previous_token_ids: Sequence[int],
        current_token_ids: Sequence[int],
        delta_token_ids: Sequence[int],
    ) -> DeltaMessage | None:
        """What one streaming step adds to the reasoning and/or the content; None when it
        adds nothing yet."""
        before = self._parse_streaming(previous_text)
        after = self._parse_streaming(current_text)
        reasoning = _suffix(before.reasoning, after.reasoning)
        content = _suffix(before.content, after.content)
        if not reasoning and not content:
            return None
        return DeltaMessage(reasoning_content=reasoning or None, content=content or None)

    def _parse_streaming(self, text: str) -> ParsedReasoning:
        try:
            return self.parse(text, final=False)
        except Exception:
            return ParsedReasoning("", "")


def _suffix(old: str, new: str) -> str:
    return new[len(old) :] if new.startswith(old) else ""
