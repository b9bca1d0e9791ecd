"""Profile decode steps of the Llama-3.1-8B shape (dummy weights, bf16) on CUDA: wall time per
step against GPU kernel time per step, and the top kernels and host ops.

    python benchmarks/profile_decode.py [STEPS] [--batch B] [--context C]

B requests (default 1) of C prompt tokens (default 128) decode together.
"""

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from pagoda import LLM, SamplingParams

parser = argparse.ArgumentParser()
parser.add_argument("steps", nargs="?", type=int, default=50)
parser.add_argument("--batch", type=int, default=1)
parser.add_argument("--context", type=int, default=128)
args = parser.parse_args()
steps = args.steps
llm = LLM(
    "benchmarks/configs/llama-3.1-8b",
    tokenizer="benchmarks/tokenizer",
    load_format="dummy",
    dtype="bfloat16",
    max_model_len=4096,
    max_num_seqs=max(256, args.batch),
)
engine = llm.llm_engine
for i in range(args.batch):
    prompt = [(100 + i + t) % 10000 for t in range(args.context)]
    engine.add_request(
        f"p{i}",
        {"prompt_token_ids": prompt},
        SamplingParams(max_tokens=2 * steps + 100, ignore_eos=True, temperature=0),
    )
while engine.scheduler.waiting or any(  # prefill, then a few warm decode steps
    r.num_computed_tokens < len(r.prompt_token_ids) for r in engine.scheduler.running
):
    engine.step()
for _ in range(10):
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
kernels = sum(e.count for e in events if e.device_type.name == "CUDA") / steps
print(
    f"batch {args.batch}, context {args.context}: wall {plain * 1e3:.2f} ms/step (unprofiled); "
    f"GPU kernels {gpu_us / 1e3:.2f} ms/step, {kernels:.0f} kernels/step"
)
print(events.table(sort_by="self_cuda_time_total", row_limit=20, max_name_column_width=70))
