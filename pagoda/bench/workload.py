"""Benchmark workloads: prompts of given token lengths and per-request output lengths."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any


@dataclass(slots=True)
class BenchRequest:
    """One benchmark request: its prompt token ids and how many tokens it must produce."""

    prompt_token_ids: list[int]
    max_tokens: int


def parse_length(text: str, range_ratio: float) -> tuple[int, int]:
    """``"N"`` with a range ratio r -> [N(1-r), N(1+r)]; ``"LO:HI"`` -> [LO, HI]."""
    try:
        if ":" in text:
            lo, hi = (int(x) for x in text.split(":", 1))
        else:
            n = int(text)
            lo, hi = round(n * (1 - range_ratio)), round(n * (1 + range_ratio))
    except ValueError:
        raise ValueError(f"bad length {text!r}: expected N or LO:HI") from None
    if not 1 <= lo <= hi:
        raise ValueError(f"bad length range {text!r} (ratio {range_ratio}): [{lo}, {hi}]")
    return lo, hi


def corpus_token_ids(tokenizer: Any) -> list[int]:
    text = resources.files("pagoda.bench").joinpath("data/corpus.txt").read_text()
    return list(tokenizer.encode(text, add_special_tokens=False))


def random_workload(
    num_prompts: int,
    input_range: tuple[int, int],
    output_range: tuple[int, int],
    seed: int,
    corpus: list[int] | None = None,
    vocab_size: int = 10000,
) -> list[BenchRequest]:
    """Lengths from Python's ``random`` seeded with ``seed``: all prompt lengths first, then
    all output lengths. Prompts are windows of ``corpus`` (real text, chosen by a second RNG
    so the lengths do not depend on it) or, without a corpus, ids uniform in [0, vocab_size)."""
    random.seed(seed)
    in_lens = [random.randint(*input_range) for _ in range(num_prompts)]
    out_lens = [random.randint(*output_range) for _ in range(num_prompts)]
    picker = random.Random(seed + 1)
    requests = []
    for n, m in zip(in_lens, out_lens, strict=True):
        if corpus:
            reps = -(-n // len(corpus)) + 1
            text = corpus * reps
            start = picker.randrange(len(corpus))
            ids = text[start : start + n]
        else:
            ids = [picker.randrange(vocab_size) for _ in range(n)]
        requests.append(BenchRequest(ids, m))
    return requests


def nano_vllm_workload(
    num_prompts: int, input_range: tuple[int, int], output_range: tuple[int, int], seed: int
) -> list[BenchRequest]:
    """nano-vllm's bench.py workload, draw for draw: ``random.seed(seed)``; per request a
    prompt length, then its token ids uniform in [0, 10000] (inclusive, as ``randint``); then
    every request's max_tokens. With 256 requests, [100, 1024] both: 133,966 output tokens."""
    random.seed(seed)
    prompts = [
        [random.randint(0, 10000) for _ in range(random.randint(*input_range))]
        for _ in range(num_prompts)
    ]
    out_lens = [random.randint(*output_range) for _ in range(num_prompts)]
    return [BenchRequest(p, m) for p, m in zip(prompts, out_lens, strict=True)]


def lognormal_workload(
    num_prompts: int,
    means: tuple[int, int],
    sigma: float,
    clip: tuple[int, int],
    seed: int,
    vocab_size: int = 10000,
) -> list[BenchRequest]:
    """Serving-style lengths: prompt and output lengths each lognormal with the given means
    (``mu = ln(mean) - sigma**2 / 2``), clipped to ``clip``, drawn from ``random.Random(seed)``
    (all prompt lengths, then all output lengths); prompt ids uniform in [0, vocab_size)."""
    rng = random.Random(seed)

    def draw(mean: int) -> list[int]:
        mu = math.log(mean) - sigma**2 / 2
        return [
            min(max(round(rng.lognormvariate(mu, sigma)), clip[0]), clip[1])
            for _ in range(num_prompts)
        ]

    in_lens, out_lens = draw(means[0]), draw(means[1])
    return [
        BenchRequest([rng.randrange(vocab_size) for _ in range(n)], m)
        for n, m in zip(in_lens, out_lens, strict=True)
    ]


def file_workload(
    path: str, tokenizer: Any, output_range: tuple[int, int], seed: int
) -> list[BenchRequest]:
    """One prompt per non-empty line of a text file; output lengths as in random_workload."""
    lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
    rng = random.Random(seed)
    return [
        BenchRequest(list(tokenizer.encode(line)), rng.randint(*output_range)) for line in lines
    ]
