"""The offline pooling API of :class:`pagoda.LLM`: ``embed``, ``classify``, ``score``,
``reward`` and ``encode``, as in vLLM. Each needs an engine started for that task
(``LLM(model, task="embed")`` ...); ``score`` works with a cross-encoder (``task="score"``)
or an embedding model (cosine similarity)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tqdm.auto import tqdm

from pagoda.pooling_params import (
    PoolingOutput,
    PoolingParams,
    PoolingRequestOutput,
    cosine_similarity,
    score_pairs,
)

PoolingPrompt = str | dict[str, Any]


class PoolingMixin:
    """Pooling methods; the class using it provides ``llm_engine`` and ``_counter``."""

    llm_engine: Any
    _counter: Any

    def encode(
        self,
        prompts: PoolingPrompt | Sequence[PoolingPrompt],
        pooling_params: PoolingParams | Sequence[PoolingParams] | None = None,
        use_tqdm: bool = True,
        truncate_prompt_tokens: int | None = None,
        pooling_task: str | None = None,
    ) -> list[PoolingRequestOutput]:
        """Pool every prompt with the engine's task (or ``pooling_task``); outputs in order."""
        if isinstance(prompts, (str, dict)):
            prompts = [prompts]
        prompts = list(prompts)
        if pooling_params is None or isinstance(pooling_params, PoolingParams):
            base = pooling_params or PoolingParams()
            params_list = [base] * len(prompts)
        else:
            params_list = list(pooling_params)
            if len(params_list) != len(prompts):
                raise ValueError(
                    f"got {len(prompts)} prompts but {len(params_list)} pooling params"
                )
        overrides: dict[str, Any] = {}
        if pooling_task is not None:
            overrides["task"] = pooling_task
        if truncate_prompt_tokens is not None:
            overrides["truncate_prompt_tokens"] = truncate_prompt_tokens
        if overrides:
            params_list = [_replace(p, **overrides) for p in params_list]
        ids: list[str] = [""] * len(prompts)
        engine = self.llm_engine
        try:
            for i in longest_first(prompts):
                rid = str(next(self._counter))
                engine.add_request(rid, prompts[i], params_list[i])
                ids[i] = rid
            return self._run_pooling(ids, use_tqdm)
        except BaseException:
            engine.abort_request([rid for rid in ids if rid])
            raise

    def embed(
        self,
        prompts: PoolingPrompt | Sequence[PoolingPrompt],
        pooling_params: PoolingParams | Sequence[PoolingParams] | None = None,
        use_tqdm: bool = True,
        truncate_prompt_tokens: int | None = None,
    ) -> list[PoolingRequestOutput]:
        """Embeddings (``output.outputs.embedding``); needs ``task="embed"``."""
        return self.encode(prompts, pooling_params, use_tqdm, truncate_prompt_tokens, "embed")

    def classify(
        self,
        prompts: PoolingPrompt | Sequence[PoolingPrompt],
        pooling_params: PoolingParams | Sequence[PoolingParams] | None = None,
        use_tqdm: bool = True,
        truncate_prompt_tokens: int | None = None,
    ) -> list[PoolingRequestOutput]:
        """Class probabilities (``output.outputs.probs``); needs ``task="classify"``."""
        return self.encode(prompts, pooling_params, use_tqdm, truncate_prompt_tokens, "classify")

    def reward(
        self,
        prompts: PoolingPrompt | Sequence[PoolingPrompt],
        pooling_params: PoolingParams | Sequence[PoolingParams] | None = None,
        use_tqdm: bool = True,
        truncate_prompt_tokens: int | None = None,
    ) -> list[PoolingRequestOutput]:
        """The reward head's raw output (``output.outputs.data``); needs ``task="reward"``."""
        return self.encode(prompts, pooling_params, use_tqdm, truncate_prompt_tokens, "reward")

    def score(
        self,
        text_1: str | list[str],
        text_2: str | list[str],
        truncate_prompt_tokens: int | None = None,
        use_tqdm: bool = True,
        pooling_params: PoolingParams | None = None,
    ) -> list[PoolingRequestOutput]:
        """A relevance score (``output.outputs.score``) per pair: one ``text_1`` against each
        ``text_2``, or two equal-length lists zipped. A cross-encoder (``task="score"``)
        reads each pair together; an embedding model (``task="embed"``) scores the cosine
        similarity of the two embeddings."""
        pairs = score_pairs(text_1, text_2)
        task = self.llm_engine.config.model.task
        if task == "score":
            prompts = [{"text": a, "text_pair": b} for a, b in pairs]
            return self.encode(prompts, pooling_params, use_tqdm, truncate_prompt_tokens, "score")
        if task != "embed":
            raise ValueError(
                f"this engine runs the {task!r} task; start it with task='score' "
                "(a cross-encoder) or task='embed' to score"
            )
        texts = list(dict.fromkeys(t for pair in pairs for t in pair))
        embedded = self.embed(texts, pooling_params, use_tqdm, truncate_prompt_tokens)
        by_text = dict(zip(texts, embedded, strict=True))
        outputs = []
        for i, (a, b) in enumerate(pairs):
            ea, eb = by_text[a], by_text[b]
            outputs.append(
                PoolingRequestOutput(
                    request_id=f"score-{i}",
                    prompt_token_ids=ea.prompt_token_ids + eb.prompt_token_ids,
                    outputs=PoolingOutput(cosine_similarity(ea.outputs.data, eb.outputs.data)),
                )
            )
        return outputs

    def _run_pooling(self, ids: list[str], use_tqdm: bool) -> list[PoolingRequestOutput]:
        engine = self.llm_engine
        finished: dict[str, PoolingRequestOutput] = {}
        bar = tqdm(total=len(ids), desc="Processed prompts", disable=not use_tqdm)
        while len(finished) < len(ids):
            for output in engine.step():
                if output.finished:
                    finished[output.request_id] = output
                    bar.update(1)
        bar.close()
        return [finished[i] for i in ids]


def longest_first(prompts: Sequence[PoolingPrompt]) -> list[int]:
    """Prompt indices, longest first (token count, else characters), as
    ``SentenceTransformer.encode`` orders its batches. The scheduler packs each step in
    arrival order, so a step then holds prompts of similar lengths: on the CPU, encoder
    attention runs each stretch of equal lengths as one unpadded batch (see
    :mod:`pagoda.layers.encoder_attention`). Outputs still come back in the caller's order."""
    return sorted(range(len(prompts)), key=lambda i: -_prompt_length(prompts[i]))


def _prompt_length(prompt: PoolingPrompt) -> int:
    if isinstance(prompt, str):
        return len(prompt)
    if "prompt_token_ids" in prompt:
        return len(prompt["prompt_token_ids"])
    if "text_pair" in prompt:
        return len(prompt["text"]) + len(prompt["text_pair"])
    return len(prompt.get("prompt", ""))


def _replace(params: PoolingParams, **changes: Any) -> PoolingParams:
    import dataclasses

    return dataclasses.replace(params, **changes)
