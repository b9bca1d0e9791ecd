"""Profile batch-1 decode steps of the Llama-3.1-8B shape (dummy weights, bf16) on CUDA:
wall time per step against GPU kernel time per step, and the top kernels and host ops.

    python benchmarks/profile_decode.py [STEPS]
"""

import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from pagoda import LLM, SamplingParams

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 50
llm = LLM("benchmarks/configs/llama-3.1-8b", tokenizer="benchmarks/tokenizer",
          load_format="dummy", dtype="bfloat16", max_model_len=2048)
engine = llm.llm_engine
engine.add_request("p", {"prompt_token_ids": list(range(100, 228))},
                   SamplingParams(max_tokens=steps + 40, ignore_eos=True, temperature=0))
for _ in range(20):  # prefill and warm decode steps
    engine.step()
torch.cuda.synchronize()
start = time.perf_counter()
for _ in range(steps):
    engine.step()
torch.cuda.synchronize()
plain = (time.perf_counter() - start) / steps
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    for _ in range(steps):
        engine.step()
    torch.cuda.synchronize()
events = prof.key_averages()
gpu_us = sum(e.self_device_time_total for e in events) / steps
print(f"wall {plain * 1e3:.2f} ms/step (unprofiled); GPU kernels {gpu_us / 1e3:.2f} ms/step")
print(events.table(sort_by="self_cuda_time_total", row_limit=12))
print(events.table(sort_by="self_cpu_time_total", row_limit=12))
