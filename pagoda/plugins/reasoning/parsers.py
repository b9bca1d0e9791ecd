"""The built-in reasoning parsers: each is a pair of marker sets and two choices — may the
opening marker be missing (templates that inject it), and may content come before it."""

from __future__ import annotations

from collections.abc import Sequence

from pagoda.interfaces.reasoning import ParsedReasoning, ReasoningParser


def _held_back(text: str, markers: tuple[str, ...]) -> str:
    """``text`` without its longest suffix that begins one of ``markers``."""
    cut = len(text)
    for marker in markers:
        for n in range(min(len(marker) - 1, len(text)), 0, -1):
            if text.endswith(marker[:n]):
                cut = min(cut, len(text) - n)
                break
    return text[:cut]


def _first(text: str, markers: tuple[str, ...], pos: int = 0) -> tuple[int, str] | None:
    found = [(i, m) for m in markers if (i := text.find(m, pos)) >= 0]
    return min(found) if found else None


class MarkerReasoningParser(ReasoningParser):
    """Reasoning between a start and an end marker; content after the end.

    - ``start_optional``: without the opening marker the output begins inside the reasoning;
    - ``content_before_start``: text before the opening marker is content (otherwise the
      opening marker must begin the output, after whitespace, or it is all content).

    Reasoning that never ends (a truncated output) is all reasoning, streaming or not.
    """

    start_markers: tuple[str, ...] = ()
    end_markers: tuple[str, ...] = ()
    start_optional: bool = False
    content_before_start: bool = False

    def parse(self, text: str, final: bool) -> ParsedReasoning:
        before, body_at = self._find_body(text, final)
        if body_at is None:
            return ParsedReasoning("", before)
        end = _first(text, self.end_markers, body_at)
        if end is None:
            body = text[body_at:]
            return ParsedReasoning(body if final else _held_back(body, self.end_markers), before)
        return ParsedReasoning(text[body_at : end[0]], before + text[end[0] + len(end[1]) :])

    def _find_body(self, text: str, final: bool) -> tuple[str, int | None]:
        """The content before the reasoning and where the reasoning begins (None: no
        reasoning, or not known yet)."""
        if self.content_before_start:
            start = _first(text, self.start_markers)
            if start is None:
                return (text if final else _held_back(text, self.start_markers)), None
            return text[: start[0]], start[0] + len(start[1])
        pos = len(text) - len(text.lstrip())
        for marker in self.start_markers:
            if text.startswith(marker, pos):
                return "", pos + len(marker)
        if not final and any(m.startswith(text[pos:]) for m in self.start_markers):
            return "", None
        return ("", 0) if self.start_optional else (text, None)

    def _end_token_id(self) -> int | None:
        ids = [self.vocab[m] for m in self.end_markers if m in self.vocab]
        return ids[0] if len(ids) == 1 and len(self.end_markers) == 1 else None

    def _decode(self, token_ids: Sequence[int]) -> str:
        if self.model_tokenizer is None:
            return ""
        return self.model_tokenizer.decode(list(token_ids), skip_special_tokens=False)

    def is_reasoning_end(self, input_ids: Sequence[int]) -> bool:
        end_id = self._end_token_id()
        if end_id is not None:
            return end_id in input_ids
        return _first(self._decode(input_ids), self.end_markers) is not None

    def extract_content_ids(self, input_ids: Sequence[int]) -> list[int]:
        ids = list(input_ids)
        end_id = self._end_token_id()
        if end_id is not None:
            if end_id not in ids:
                return []
            return ids[len(ids) - ids[::-1].index(end_id) :]
        if not self.is_reasoning_end(ids):
            return []
        # The shortest prefix whose text holds an end marker ends the reasoning.
        low, high = 1, len(ids)
        while low < high:
            mid = (low + high) // 2
            if _first(self._decode(ids[:mid]), self.end_markers) is None:
                low = mid + 1
            else:
                high = mid
        return ids[low:]


class DeepSeekR1ReasoningParser(MarkerReasoningParser):
    """DeepSeek-R1: ``<think>...</think>``; the opening tag may be missing, since R1's
    templates put it in the prompt."""

    start_markers = ("<think>",)
    end_markers = ("</think>",)
    start_optional = True


class Qwen3ReasoningParser(MarkerReasoningParser):
    """Qwen3: strict ``<think>...</think>`` at the start of the output; an output without it
    (``enable_thinking: false``, whose template closes an empty think block in the prompt) is
    all content."""

    start_markers = ("<think>",)
    end_markers = ("</think>",)


class GraniteReasoningParser(MarkerReasoningParser):
    """IBM Granite 3.2+: "Here is my thought process:" ... "Here is my response:" (or
    "Here's")."""

    start_markers = ("Here is my thought process:", "Here's my thought process:")
    end_markers = ("Here is my response:", "Here's my response:")


class MistralReasoningParser(MarkerReasoningParser):
    """Magistral: ``[THINK]...[/THINK]`` (special tokens); text before ``[THINK]`` is content."""

    start_markers = ("[THINK]",)
    end_markers = ("[/THINK]",)
    content_before_start = True
    needs_special_tokens = True
