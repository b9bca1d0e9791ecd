"""The transformers baseline: the same workload through ``generate`` on padded static batches."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from pagoda.bench.workload import BenchRequest
from pagoda.config import EngineConfig, is_gguf


def load_hf_model(config: EngineConfig) -> Any:
    """The transformers model of the engine's checkpoint (random weights for dummy loads)."""
    from transformers import AutoModelForCausalLM

    m = config.model
    device = config.device.torch_device
    if m.load_format == "dummy":
        # Built (and randomly initialised) on the device: minutes faster for an 8B model.
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(m.hf_config, dtype=m.torch_dtype)
    elif is_gguf(m.model_path):
        p = Path(m.model_path)
        model = AutoModelForCausalLM.from_pretrained(
            str(p.parent), gguf_file=p.name, dtype=m.torch_dtype
        )
    else:
        model = AutoModelForCausalLM.from_pretrained(m.model_path, dtype=m.torch_dtype)
    return model.to(device).eval()


def release_engine(llm: Any) -> None:
    """Free the pagoda engine's device memory (model, KV cache, CUDA graphs) so the baseline
    can run in the same process; the engine is unusable afterwards."""
    import gc

    llm.llm_engine.executor.runner.release()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@torch.inference_mode()
def hf_generate(
    model: Any, requests: list[BenchRequest], batch_size: int, temperature: float, pad_token_id: int
) -> tuple[float, int]:
    """Run the requests in padded batches of ``batch_size`` (left padding, every row generating
    up to the batch's longest max_tokens, as a static batch does). Returns (seconds, useful
    output tokens), counting for each request only its own max_tokens."""
    device = next(model.parameters()).device
    start = time.perf_counter()
    for i in range(0, len(requests), batch_size):
        batch = requests[i : i + batch_size]
        width = max(len(r.prompt_token_ids) for r in batch)
        ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, r in enumerate(batch):
            n = len(r.prompt_token_ids)
            ids[row, width - n :] = torch.tensor(r.prompt_token_ids)
            mask[row, width - n :] = 1
        new = max(r.max_tokens for r in batch)
        model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else None,
            top_p=None,
            top_k=None,
            pad_token_id=pad_token_id,
        )
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, sum(r.max_tokens for r in requests)
