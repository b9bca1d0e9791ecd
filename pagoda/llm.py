"""The offline API: ``LLM(...).generate(...)`` and ``.chat(...)``, as in vLLM."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from typing import Any

from tqdm.auto import tqdm

from pagoda.config import DEFAULT_MODEL, EngineConfig
from pagoda.core.engine import LLMEngine, PromptInput
from pagoda.llm_pooling import PoolingMixin
from pagoda.outputs import RequestOutput
from pagoda.sampling_params import RequestOutputKind, SamplingParams

Message = dict[str, Any]


class LLM(PoolingMixin):
    """An engine for offline batch generation, and for pooling (``embed``, ``classify``,
    ``score``, ``reward``, ``encode``: :mod:`pagoda.llm_pooling`) with ``task=...``.

    ``LLM()`` runs the default model (SmolLM2-135M-Instruct). Keyword arguments are vLLM's
    engine options: ``dtype``, ``max_model_len``, ``load_format``, ``seed``, ``block_size``,
    ``kv_cache_memory``, ``gpu_memory_utilization``, ``enable_prefix_caching``,
    ``max_num_seqs``, ``max_num_batched_tokens``, ``device`` ...
    """

    def __init__(self, model: str = DEFAULT_MODEL, **kwargs: Any) -> None:
        self._start(EngineConfig.from_kwargs(model=model, **kwargs))

    @classmethod
    def from_engine_config(cls, config: EngineConfig) -> LLM:
        """An LLM on an engine config already built, e.g. one the CLI finalized to check its
        flags (finalizing reads the model's config, seconds for a GGUF file)."""
        llm = cls.__new__(cls)
        llm._start(config)
        return llm

    def _start(self, config: EngineConfig) -> None:
        self.llm_engine = LLMEngine(config)
        self._counter = itertools.count()

    def get_tokenizer(self) -> Any:
        return self.llm_engine.tokenizer

    def generate(
        self,
        prompts: PromptInput | Sequence[PromptInput],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        use_tqdm: bool = True,
    ) -> list[RequestOutput]:
        """Generate for every prompt; outputs come back in the prompts' order."""
        if isinstance(prompts, (str, dict)):
            prompts = [prompts]
        prompts = list(prompts)
        params = sampling_params if sampling_params is not None else SamplingParams()
        if isinstance(params, SamplingParams):
            params_list = [params] * len(prompts)
        else:
            params_list = list(params)
            if len(params_list) != len(prompts):
                raise ValueError(
                    f"got {len(prompts)} prompts but {len(params_list)} sampling params"
                )
        # Only final outputs are returned, so the engine need not build the others.
        final_only = {}
        for p in params_list:
            if id(p) not in final_only and p.output_kind is RequestOutputKind.CUMULATIVE:
                final_only[id(p)] = copy.copy(p)
                final_only[id(p)].output_kind = RequestOutputKind.FINAL_ONLY
        params_list = [final_only.get(id(p), p) for p in params_list]
        ids = []
        try:
            for prompt, p in zip(prompts, params_list, strict=True):
                rid = str(next(self._counter))
                self.llm_engine.add_request(rid, prompt, p)
                ids.append(rid)
            return self._run_engine(ids, use_tqdm)
        except BaseException:
            self.llm_engine.abort_request(ids)
            raise

    def chat(
        self,
        messages: list[Message] | list[list[Message]],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        use_tqdm: bool = True,
        chat_template: str | None = None,
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        chat_template_kwargs: dict[str, Any] | None = None,
    ) -> list[RequestOutput]:
        """Apply the chat template to each conversation and generate a reply."""
        conversations = [messages] if messages and isinstance(messages[0], dict) else messages
        tokenizer = self.get_tokenizer()
        prompts: list[PromptInput] = []
        for conversation in conversations:
            text = tokenizer.apply_chat_template(
                conversation,
                chat_template=chat_template,
                tokenize=False,
                add_generation_prompt=add_generation_prompt and not continue_final_message,
                continue_final_message=continue_final_message,
                **(chat_template_kwargs or {}),
            )
            ids = tokenizer.encode(text, add_special_tokens=False)
            prompts.append({"prompt": text, "prompt_token_ids": ids})
        return self.generate(prompts, sampling_params, use_tqdm=use_tqdm)

    def _run_engine(self, ids: list[str], use_tqdm: bool) -> list[RequestOutput]:
        engine = self.llm_engine
        finished: dict[str, RequestOutput] = {}
        bar = tqdm(
            total=len(ids), desc="Processed prompts", disable=not use_tqdm, dynamic_ncols=True
        )
        out_tokens = 0
        while len(finished) < len(ids):
            for output in engine.step():
                if output.finished:
                    finished[output.request_id] = output
                    out_tokens += sum(len(o.token_ids) for o in output.outputs)
                    bar.update(1)
                    elapsed = bar.format_dict["elapsed"] or 1e-9
                    bar.set_postfix_str(f"output: {out_tokens / elapsed:.1f} tok/s")
        bar.close()
        return [finished[i] for i in ids]
