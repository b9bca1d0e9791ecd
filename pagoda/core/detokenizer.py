"""Incremental detokenization of generated tokens, and stop strings.

One ``IncrementalDetokenizer`` per request, updated once per engine step::

    new token ids --> decoder.step(ids) --> text delta ("" while a UTF-8 character is incomplete)
                  --> output_text += delta
                  --> stop-string search over the delta plus the len(stop) - 1 chars before it
                  --> get_next_output_text(): output_text less a hold-back of len(longest stop) - 1

Two decoders produce the deltas. Both keep a short window of token ids and emit
``decode(window)[len(decode(prefix of window)):]`` only when the decoded window does not end in
U+FFFD, so a character split over several byte-level BPE tokens is emitted once, whole:

* ``_StreamDecoder``: the tokenizers library's own ``DecodeStream`` (window kept in Rust),
  for fast tokenizers.
* ``_WindowDecoder``: the same algorithm in Python with prefix/read offsets, as vLLM's slow
  path, for other tokenizers and for ``spaces_between_special_tokens=False`` with special
  tokens shown.

Both windows start with a few prompt tokens as context (see ``_prompt_context``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream

_REPLACEMENT_CHAR = "\ufffd"

# The prompt context is the shortest suffix of at least _MIN_CONTEXT_TOKENS tokens that decodes
# to whole characters, looked for up to _MAX_CONTEXT_TOKENS tokens back.
_MIN_CONTEXT_TOKENS = 4
_MAX_CONTEXT_TOKENS = 24


def _prompt_context(prompt_token_ids: list[int], decode: Callable[[list[int]], str]) -> list[int]:
    """The prompt tokens that prime the decoder, so the first generated tokens decode in context.

    A byte-level BPE decoder maps each token to its bytes independently ("Ġ" is a literal space),
    so a context of whole characters changes nothing: the generation decodes exactly as
    ``tokenizer.decode(output_ids)``. Decoders that drop the leading space of a sequence
    (SentencePiece's Metaspace) need the context to keep the space that separates the first
    generated word from the prompt. A context that ends inside a character would make the first
    delta include that character's prompt bytes, so such suffixes are refused; when none of the
    candidates decodes cleanly, the generation is decoded without context.
    """
    n_prompt = len(prompt_token_ids)
    for n in range(min(_MIN_CONTEXT_TOKENS, n_prompt), min(_MAX_CONTEXT_TOKENS, n_prompt) + 1):
        suffix = prompt_token_ids[n_prompt - n :]
        if _REPLACEMENT_CHAR not in decode(suffix):
            return suffix
    return []


class _StreamDecoder:
    """Deltas from ``tokenizers.decoders.DecodeStream`` stepped with the fast backend."""

    def __init__(self, backend: Tokenizer, prompt_token_ids: list[int], skip_special_tokens: bool):
        self._backend = backend
        context = _prompt_context(
            prompt_token_ids,
            lambda ids: backend.decode(ids, skip_special_tokens=skip_special_tokens),
        )
        self._stream = DecodeStream(ids=context, skip_special_tokens=skip_special_tokens)

    def step(self, token_ids: list[int]) -> str:
        """Append tokens; return the text they complete ("" if none yet)."""
        return self._stream.step(self._backend, token_ids) or ""


class _WindowDecoder:
    """Deltas from decoding a sliding window of token ids with ``tokenizer.decode``.

    Window layout (indices into ``self._ids``, which holds only the window)::

        | prefix: already emitted | unread: not yet emitted |
        0                         _read                     len(_ids)

    ``_prefix_text == decode(_ids[:_read])``. A step appends to the unread part and emits
    ``decode(_ids)[len(_prefix_text):]`` once that is non-empty and ends in a whole character;
    the unread part then becomes the next prefix, so the window stays a few tokens long.
    """

    def __init__(
        self,
        tokenizer: Any,
        prompt_token_ids: list[int],
        skip_special_tokens: bool,
        spaces_between_special_tokens: bool,
    ):
        self._tokenizer = tokenizer
        self._skip_special_tokens = skip_special_tokens
        # Added-token id -> its text, for joining added tokens to their neighbours without a
        # separator; only needed when they are shown and spaces between them are unwanted.
        self._added_tokens: dict[int, str] = {}
        if not skip_special_tokens and not spaces_between_special_tokens:
            self._added_tokens = {i: s for s, i in tokenizer.get_added_vocab().items()}
        self._ids = _prompt_context(prompt_token_ids, self._decode)
        self._read = len(self._ids)
        self._prefix_text = self._decode(self._ids)

    def _decode(self, token_ids: list[int]) -> str:
        if not self._added_tokens:
            return self._tokenizer.decode(token_ids, skip_special_tokens=self._skip_special_tokens)
        parts: list[str] = []
        run: list[int] = []
        for token_id in token_ids:
            added = self._added_tokens.get(token_id)
            if added is None:
                run.append(token_id)
                continue
            if run:
                parts.append(self._tokenizer.decode(run))
                run = []
            parts.append(added)
        if run:
            parts.append(self._tokenizer.decode(run))
        return "".join(parts)

    def step(self, token_ids: list[int]) -> str:
        """Append tokens; return the text they complete ("" if none yet)."""
        self._ids.extend(token_ids)
        text = self._decode(self._ids)
        if len(text) <= len(self._prefix_text) or text.endswith(_REPLACEMENT_CHAR):
            return ""
        delta = text[len(self._prefix_text) :]
        del self._ids[: self._read]
        self._read = len(self._ids)
        self._prefix_text = self._decode(self._ids)
        return delta


class IncrementalDetokenizer:
    """Turns a request's generated tokens into text, one engine step at a time.

    For a byte-level BPE tokenizer ``output_text`` equals
    ``tokenizer.decode(output_ids, skip_special_tokens=...)`` up to the last whole character (a
    character still missing bytes is not emitted, never shown as U+FFFD); decoders that join
    tokens with spaces (WordPiece, Metaspace) also give the first token the space that separates
    it from the prompt. The text is cut at the earliest stop string: just before it, or just
    after it with ``include_stop_str_in_output``. Once ``update`` has returned a stop string the
    request is finished; the engine must not call ``update`` again.

    ``spaces_between_special_tokens=False`` (with ``skip_special_tokens=False``) joins added
    tokens such as ``<|im_end|>`` to their neighbours with no separator even where the
    tokenizer's decoder would put one (WordPiece); with True the decoder's own output is kept.
    """

    def __init__(
        self,
        tokenizer: Any,
        prompt_token_ids: list[int],
        *,
        stop: list[str],
        include_stop_str_in_output: bool,
        skip_special_tokens: bool,
        spaces_between_special_tokens: bool,
    ):
        if any(not s for s in stop):
            raise ValueError(f"stop: empty stop strings are not allowed, got {stop!r}")
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._backend: Tokenizer | None = (
            backend
            if getattr(tokenizer, "is_fast", False) and isinstance(backend, Tokenizer)
            else None
        )
        self._tokenizer = tokenizer
        self._decoder: _StreamDecoder | _WindowDecoder
        if self._backend is not None and (skip_special_tokens or spaces_between_special_tokens):
            self._decoder = _StreamDecoder(self._backend, prompt_token_ids, skip_special_tokens)
        else:
            self._decoder = _WindowDecoder(
                tokenizer, prompt_token_ids, skip_special_tokens, spaces_between_special_tokens
            )
        self._stop = list(stop)
        self._include_stop_str_in_output = include_stop_str_in_output
        # A stop string is cut from the text only once complete, so up to len(stop) - 1 of its
        # chars may sit at the end of output_text; streaming holds them back. When the stop
        # string is kept in the output nothing before its end is ever cut: no hold-back.
        self._hold_back = (
            0 if include_stop_str_in_output or not stop else max(len(s) for s in stop) - 1
        )
        self._text = ""
        # Invariant: _num_streamed <= len(_text), even after a stop cut, because the cut point
        # is at most (longest stop - 1) chars before the end of the text streamed against.
        self._num_streamed = 0

    @property
    def output_text(self) -> str:
        """The text generated so far, cut at a matched stop string."""
        return self._text

    def update(self, new_token_ids: list[int]) -> str | None:
        """Append newly generated tokens; return the stop string that matched, else None.

        When a stop string matches, ``output_text`` is cut (see the class docstring) and the
        request must be finished by the caller.
        """
        if not new_token_ids:
            return None
        delta = self._decoder.step(new_token_ids)
        if not delta:
            return None
        num_old_chars = len(self._text)
        self._text += delta
        return self._check_stop(num_old_chars) if self._stop else None

    def _check_stop(self, num_old_chars: int) -> str | None:
        """Find the earliest stop string that ends in the new text; cut the text there.

        A stop string ending in the new text starts at most len(stop) - 1 chars before it, so
        the search costs O(new text), not O(output_text). Ties go to the first listed.
        """
        text = self._text
        match_index = len(text)
        match: str | None = None
        for stop_str in self._stop:
            index = text.find(stop_str, max(num_old_chars - len(stop_str) + 1, 0))
            if index != -1 and index < match_index:
                match_index, match = index, stop_str
        if match is not None:
            if self._include_stop_str_in_output:
                match_index += len(match)
            self._text = text[:match_index]
        return match

    def get_next_output_text(self, finished: bool, delta: bool) -> str:
        """Text to stream to the client.

        Args:
            finished: whether the request is finished; if not, the last
                len(longest stop) - 1 chars are held back, since they may be the start of a
                stop string that the next tokens complete (and that must not be streamed).
            delta: return only the text not returned before by a ``delta=True`` call;
                otherwise return all of the text (less the hold-back).
        """
        end = len(self._text) if finished else max(len(self._text) - self._hold_back, 0)
        if not delta:
            return self._text[:end]
        if end <= self._num_streamed:
            return ""
        start, self._num_streamed = self._num_streamed, end
        return self._text[start:end]

    def decode_token(self, token_id: int) -> str:
        """One token's own text (special tokens shown), e.g. for a logprob's ``decoded_token``.

        A token holding only part of a character's bytes decodes to U+FFFD.
        """
        if self._backend is not None:
            return self._backend.decode([token_id], skip_special_tokens=False)
        return self._tokenizer.decode([token_id])
