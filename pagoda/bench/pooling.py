"""``pagoda bench throughput --task embed`` (and other pooling tasks): a set of sentences
pooled offline, against Sentence-Transformers-style transformers batching.

The baseline is what ``SentenceTransformer.encode`` does: sort the inputs by length
(longest first), run padded batches of ``--hf-batch-size`` (default 32) through
``AutoModel``, mean-pool under the attention mask and L2-normalise. Both engines get the
same token ids, so tokenization is outside both timings.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click
import torch
import torch.nn.functional as F


def sentence_workload(
    tokenizer: Any, num: int, length_range: tuple[int, int], seed: int
) -> list[list[int]]:
    """``num`` windows of the bench corpus, ``length_range`` tokens each including the
    tokenizer's special tokens (e.g. BERT's [CLS] ... [SEP])."""
    from pagoda.bench.workload import corpus_token_ids, random_workload

    special = list(tokenizer.encode(""))  # e.g. [CLS] [SEP]: the body goes after the first
    lo, hi = length_range
    n = len(special)
    reqs = random_workload(num, (lo - n, hi - n), (1, 1), seed, corpus_token_ids(tokenizer))
    return [special[:1] + r.prompt_token_ids + special[1:] for r in reqs]


def run_pagoda(llm: Any, sentences: list[list[int]]) -> tuple[float, torch.Tensor]:
    prompts = [{"prompt_token_ids": ids} for ids in sentences]
    start = time.perf_counter()
    outputs = llm.encode(prompts, use_tqdm=False)
    elapsed = time.perf_counter() - start
    return elapsed, torch.stack([o.outputs.data for o in outputs])


@torch.inference_mode()
def run_hf(
    model_path: str, sentences: list[list[int]], batch_size: int, dtype: torch.dtype
) -> tuple[float, Any]:
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_path, dtype=dtype).eval()
    order = sorted(range(len(sentences)), key=lambda i: -len(sentences[i]))
    result = torch.empty(len(sentences), model.config.hidden_size)
    start = time.perf_counter()
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        width = max(len(sentences[i]) for i in idx)
        ids = torch.zeros(len(idx), width, dtype=torch.long)
        mask = torch.zeros(len(idx), width, dtype=torch.long)
        for row, i in enumerate(idx):
            ids[row, : len(sentences[i])] = torch.tensor(sentences[i])
            mask[row, : len(sentences[i])] = 1
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).float()
        result[idx] = F.normalize((hidden * m).sum(1) / m.sum(1), dim=-1)
    return time.perf_counter() - start, result


def run_pooling_throughput(
    llm: Any,
    num_prompts: int,
    length_range: tuple[int, int],
    seed: int,
    compare: str | None,
    hf_batch_size: int | None,
    repeats: int,
    output_json: str | None,
) -> None:
    sentences = sentence_workload(llm.get_tokenizer(), num_prompts, length_range, seed)
    tokens = sum(len(s) for s in sentences)
    click.echo(
        f"workload: {len(sentences)} sentences, {tokens} tokens ({length_range[0]}-"
        f"{length_range[1]} each), task {llm.llm_engine.config.model.task}"
    )
    run_pagoda(llm, sentences[:64])  # warm-up
    results: dict[str, list[float]] = {"pagoda": []}
    if compare == "hf":
        results["transformers"] = []
    ours = ref = None
    for _ in range(repeats):
        elapsed, ours = run_pagoda(llm, sentences)
        results["pagoda"].append(elapsed)
        click.echo(f"      pagoda: {elapsed:7.2f} s  {len(sentences) / elapsed:8.1f} sentences/s")
        if compare == "hf":
            path = llm.llm_engine.config.model.model_path
            dtype = llm.llm_engine.config.model.torch_dtype
            elapsed, ref = run_hf(path, sentences, hf_batch_size or 32, dtype)
            results["transformers"].append(elapsed)
            click.echo(
                f"transformers: {elapsed:7.2f} s  {len(sentences) / elapsed:8.1f} sentences/s"
            )
    summary: dict[str, Any] = {"num_sentences": len(sentences), "tokens": tokens}
    for name, times in results.items():
        median = sorted(times)[len(times) // 2]
        summary[name] = {"elapsed_s": times, "median_sentences_per_s": len(sentences) / median}
        click.echo(f"median {name}: {len(sentences) / median:.1f} sentences/s")
    if ours is not None and ref is not None:
        cos = F.cosine_similarity(ours.float(), ref.float(), dim=-1).min().item()
        ratio = (
            summary["pagoda"]["median_sentences_per_s"]
            / summary["transformers"]["median_sentences_per_s"]
        )
        summary["min_cosine"], summary["speedup"] = cos, ratio
        click.echo(f"speed-up {ratio:.2f}x; lowest cosine between the two: {cos:.6f}")
    if output_json:
        with open(output_json, "w") as f:
            json.dump(summary, f, indent=2)
