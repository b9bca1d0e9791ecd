"""Where a throughput recipe's time goes on CUDA: wall time per kind of engine step (pure
decode by batch size, or with prefill), then GPU kernel time by kernel under the profiler.

    python benchmarks/profile_throughput.py nano|serving [--no-profile] [--budgets=8192,2048]
        [--seqs=256,128] [--max-num-seqs=N] [--max-num-batched-tokens=N]

nano: recipe 2 (Qwen3-0.6B shape, nano-vllm's workload); serving: recipe 3 (Llama-3.1-8B
shape, 500 lognormal requests). Same engine settings as benchmarks/run_gpu.sh;
``--budgets`` and ``--seqs`` re-run the workload at each max_num_batched_tokens or
max_num_seqs instead (``--seqs`` only up to the engine's ``--max-num-seqs``, which sizes its
buffers).
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from pagoda import LLM, SamplingParams
from pagoda.bench.workload import lognormal_workload, nano_vllm_workload


def int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


parser = argparse.ArgumentParser()
parser.add_argument("recipe", nargs="?", default="nano", choices=("nano", "serving"))
parser.add_argument("--no-profile", action="store_true")
parser.add_argument("--budgets", type=int_list, default=[], help="max_num_batched_tokens list")
parser.add_argument("--seqs", type=int_list, default=[], help="max_num_seqs list")
parser.add_argument("--max-num-seqs", type=int, help="engine setting (default: the recipe's)")
parser.add_argument("--max-num-batched-tokens", type=int, help="engine setting")
args = parser.parse_args()
which = args.recipe
if which == "nano":
    model = "benchmarks/configs/qwen3-0.6b"
    requests = nano_vllm_workload(256, (100, 1024), (100, 1024), 0)
    temperature, options = 0.6, dict(max_num_seqs=256, max_num_batched_tokens=16384)
else:
    model = "benchmarks/configs/llama-3.1-8b"
    requests = lognormal_workload(500, (202, 179), 1.0, (4, 2048), 0)
    temperature = 0.0
    options = dict(max_num_seqs=256, max_num_batched_tokens=8192, enable_prefix_caching=False)
for key in ("max_num_seqs", "max_num_batched_tokens"):
    if getattr(args, key) is not None:
        options[key] = getattr(args, key)
llm = LLM(
    model,
    tokenizer="benchmarks/tokenizer",
    load_format="dummy",
    dtype="bfloat16",
    max_model_len=4096,
    **options,
)
prompts = [{"prompt_token_ids": r.prompt_token_ids} for r in requests]
params = [
    SamplingParams(temperature=temperature, max_tokens=r.max_tokens, ignore_eos=True)
    for r in requests
]
llm.generate(prompts[:4], [SamplingParams(max_tokens=8, ignore_eos=True)] * 4, use_tqdm=False)


def compiled_variants() -> dict[str, int]:
    """How many specialisations of each Triton kernel have been compiled so far."""
    from pagoda.kernels import triton_attention, triton_gemv, triton_ops

    counts = {}
    for module in (triton_attention, triton_ops, triton_gemv):
        for name, fn in vars(module).items():
            caches = getattr(fn, "device_caches", None)
            if name.startswith("_") and name.endswith("_kernel") and caches is not None:
                counts[name] = sum(len(c[0]) for c in caches.values())
    return counts


engine = llm.llm_engine
schedule = engine.scheduler.schedule


def timed_run(label: str) -> None:
    """One generate of the workload: tok/s and wall time per kind of step."""
    steps: list[tuple[float, int, int]] = []  # (time at schedule, decodes, tokens)

    def recorded_schedule():
        out = schedule()
        steps.append((time.perf_counter(), out.num_decodes, out.num_tokens))
        return out

    engine.scheduler.schedule = recorded_schedule
    before = compiled_variants()
    start = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    elapsed = time.perf_counter() - start
    engine.scheduler.schedule = schedule
    after = compiled_variants()
    produced = sum(len(o.outputs[0].token_ids) for o in outputs)
    print(
        f"{which} {label}: {produced} tokens in {elapsed:.2f} s = {produced / elapsed:.0f} "
        f"tok/s, {len(steps)} steps; kernel variants compiled meanwhile: "
        f"{ {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)} }"
    )
    groups: dict[str, list[float]] = defaultdict(list)
    for (t0, decodes, tokens), (t1, _, _) in zip(steps, steps[1:], strict=False):
        if tokens == 0:
            kind = "empty"
        elif tokens > decodes:
            kind = f"prefill({'mixed' if decodes else 'only'})"
        else:
            low = 1 << max(0, decodes.bit_length() - 1)
            kind = f"decode {low:>3}-{2 * low - 1}"
        groups[kind].append(t1 - t0)
    for kind in sorted(groups):
        d = groups[kind]
        print(
            f"  {kind:18s} {len(d):5d} steps {sum(d):7.3f} s  mean {sum(d) / len(d) * 1e3:7.3f} ms"
        )


if not args.budgets and not args.seqs:
    timed_run("as configured")
for budget in args.budgets:
    engine.scheduler.config.max_num_batched_tokens = budget
    timed_run(f"max_num_batched_tokens={budget}")
for num_seqs in args.seqs:
    engine.scheduler.config.max_num_seqs = num_seqs
    timed_run(f"max_num_seqs={num_seqs}")

if not args.no_profile:
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        llm.generate(prompts, params, use_tqdm=False)
        torch.cuda.synchronize()
    events = prof.key_averages()
    total = sum(e.self_device_time_total for e in events)
    print(f"GPU kernel time {total / 1e6:.2f} s (profiled run)")
    print(events.table(sort_by="self_cuda_time_total", row_limit=25, max_name_column_width=60))
