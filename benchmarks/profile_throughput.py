"""Where a throughput recipe's time goes on CUDA: wall time per kind of engine step (pure
decode by batch size, or with prefill) with the host's share of it, then GPU kernel time by
kernel and the GPU's idle gaps under the profiler.

    python benchmarks/profile_throughput.py nano|serving [--no-profile] [--budgets=8192,2048]
        [--seqs=256,128] [--max-num-seqs=N] [--max-num-batched-tokens=N] [--steps-json=PATH]

nano: recipe 2 (Qwen3-0.6B shape, nano-vllm's workload); serving: recipe 3 (Llama-3.1-8B
shape, 500 lognormal requests). Same engine settings as benchmarks/run_gpu.sh;
``--budgets`` and ``--seqs`` re-run the workload at each max_num_batched_tokens or
max_num_seqs instead (``--seqs`` only up to the engine's ``--max-num-seqs``, which sizes its
buffers).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from pagoda import LLM, SamplingParams
from pagoda.bench.workload import lognormal_workload, nano_vllm_workload
from pagoda.core.model_runner import LaunchedStep
from pagoda.kernels import pdl


def int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


parser = argparse.ArgumentParser()
parser.add_argument("recipe", nargs="?", default="nano", choices=("nano", "serving"))
parser.add_argument("--no-profile", action="store_true")
parser.add_argument("--budgets", type=int_list, default=[], help="max_num_batched_tokens list")
parser.add_argument("--seqs", type=int_list, default=[], help="max_num_seqs list")
parser.add_argument("--max-num-seqs", type=int, help="engine setting (default: the recipe's)")
parser.add_argument("--max-num-batched-tokens", type=int, help="engine setting")
parser.add_argument(
    "--steps-json", help="write each timed step's [decodes, tokens, wall seconds] to this file"
)
parser.add_argument(
    "--no-pdl", action="store_true", help="plain launches, so kernel times do not overlap"
)
args = parser.parse_args()
if args.no_pdl:
    pdl.ENABLED = False
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
launch = engine._launch
result = LaunchedStep.result


def step_kind(decodes: int, tokens: int) -> str:
    if tokens == 0:
        return "empty"
    if tokens > decodes:
        return f"prefill({'mixed' if decodes else 'only'})"
    low = 1 << max(0, decodes.bit_length() - 1)
    return f"decode {low:>3}-{2 * low - 1}"


def timed_run(label: str) -> None:
    """One generate of the workload: tok/s, wall time per kind of step, and of that the host's
    time launching the step and waiting for the previous step's tokens."""
    steps: list[tuple[float, int, int]] = []  # (time at schedule, decodes, tokens)
    host: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])  # kind -> [launch, wait]
    current = ["empty"]

    def recorded_schedule():
        out = schedule()
        steps.append((time.perf_counter(), out.num_decodes, out.num_tokens))
        current[0] = step_kind(out.num_decodes, out.num_tokens)
        return out

    def timed(index: int, fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                host[current[0]][index] += time.perf_counter() - t0

        return wrapper

    engine.scheduler.schedule = recorded_schedule
    engine._launch = timed(0, launch)
    LaunchedStep.result = timed(1, result)
    before = compiled_variants()
    start = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    elapsed = time.perf_counter() - start
    engine.scheduler.schedule = schedule
    del engine._launch
    LaunchedStep.result = result
    after = compiled_variants()
    produced = sum(len(o.outputs[0].token_ids) for o in outputs)
    print(
        f"{which} {label}: {produced} tokens in {elapsed:.2f} s = {produced / elapsed:.0f} "
        f"tok/s, {len(steps)} steps; kernel variants compiled meanwhile: "
        f"{ {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)} }"
    )
    groups: dict[str, list[float]] = defaultdict(list)
    walls = [
        (decodes, tokens, t1 - t0)
        for (t0, decodes, tokens), (t1, _, _) in zip(steps, steps[1:], strict=False)
    ]
    for decodes, tokens, wall in walls:
        groups[step_kind(decodes, tokens)].append(wall)
    if args.steps_json:
        Path(args.steps_json).write_text(json.dumps(walls))
    print("  step kind          steps   wall s  mean ms  launch ms  wait ms (of the previous step)")
    for kind in sorted(groups):
        d = groups[kind]
        launched, waited = (v / len(d) * 1e3 for v in host[kind])
        print(
            f"  {kind:18s} {len(d):5d} {sum(d):8.3f} {sum(d) / len(d) * 1e3:8.3f} "
            f"{launched:10.3f} {waited:8.3f}"
        )


def kernel_family(name: str) -> str:
    for key, family in (
        ("_gemv_kernel", "linear: Triton GEMV"),
        ("nvjet", "linear: cuBLAS"),
        ("gemm", "linear: cuBLAS"),
        ("cutlass", "linear: cuBLAS"),
        ("_decode_", "decode attention"),
        ("_prefill_kernel", "prefill attention"),
        ("_rms_norm", "RMSNorm"),
        ("_rotary", "rotary"),
        ("_write_kv", "KV write"),
        ("_silu", "SiLU-and-mul"),
    ):
        if key in name:
            return family
    return "other (sampling, copies, ...)"


def gpu_idle(prof: profile) -> None:
    """GPU busy time (the union of kernel and copy intervals) against the span they cover, and
    the idle gaps between them by length."""
    spans = sorted(
        (e.time_range.start, e.time_range.end)
        for e in prof.events()
        if e.device_type == DeviceType.CUDA
    )
    busy, gaps = 0.0, defaultdict(lambda: [0, 0.0])
    end = spans[0][0]
    for s, e in spans:
        if s > end:
            gap = s - end
            bucket = next(b for b in (5, 20, 100, 1000, float("inf")) if gap < b)
            gaps[bucket][0] += 1
            gaps[bucket][1] += gap
            busy += e - s
        else:
            busy += max(0.0, e - end)
        end = max(end, e)
    span = spans[-1][1] - spans[0][0]
    print(f"GPU busy {busy / 1e6:.3f} s of {span / 1e6:.3f} s ({busy / span:.1%})")
    for bucket in sorted(gaps):
        n, total = gaps[bucket]
        print(f"  idle gaps < {bucket} us: {n} gaps, {total / 1e6:.3f} s")


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
    gpu_idle(prof)
    families: dict[str, float] = defaultdict(float)
    for e in events:
        if e.self_device_time_total:
            families[kernel_family(e.key)] += e.self_device_time_total
    for family, us in sorted(families.items(), key=lambda kv: -kv[1]):
        print(f"  {family:24s} {us / 1e6:7.3f} s")
    print(events.table(sort_by="self_cuda_time_total", row_limit=25, max_name_column_width=60))
