"""Could a different schedule reach recipe 3's target? Recipe 3's workload (Llama-3.1-8B
shape, 500 lognormal requests at once) run through pagoda's own Scheduler, with each step's
time taken from a cost model of the H100's measured kernels instead of a GPU.

The model (every figure from docs/perf.md, H100, sessions 4-9):

- linear layers: the measured time of one step's 32 layers and LM head by row count
  (``linear_curve.py``, the faster of cuBLAS and the GEMV), interpolated;
- decode attention: the K/V its requests read at 78% of the 3.01 TB/s copy ceiling (the
  split kernel measured 72-82% at batch 16-200) plus 0.15 ms of split-and-reduce launches;
- prefill attention: its FLOPs at 380 TFLOP/s (recipe 4's causal prefill);
- the other kernels (norms, rotary, KV write, sampling): 0.45 ms plus 1.5 us per row and
  3.5 us per decode, and a step with prefill chunks at least 16 ms (its host launch with
  piecewise graphs).

It reproduces the measured step times by batch size within about 5%, and the recipe at
5,922 tok/s (measured in session 9: 5,864-5,884). Each row of a table changes only the
schedule: the limits, and the order requests arrive in ("longest first" knows every output
length in advance, which no server does: an upper bound on what ordering could buy).

The later tables change the kernels instead, to ask what would have to be true of them:
steps with prefill chunks costing only their kernels (no 16 ms floor: as if a whole mixed
step were one CUDA graph), and then the linear layers and decode attention at the card's
ceiling as well (the weights at the copy ceiling, 4.99 ms at one row, with the curve scaled
to match; decode attention at 100% of it; the small kernels and prefill attention as
measured).

    python benchmarks/schedule_model.py
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass

from pagoda.bench.workload import lognormal_workload
from pagoda.config import CacheConfig, SchedulerConfig
from pagoda.core.request import Request, RequestStatus
from pagoda.core.scheduler import Scheduler, SchedulerOutput
from pagoda.sampling_params import SamplingParams

# rows -> ms of one step's linear layers (H100, linear_curve.py; 04:46Z session 4 and 12:43Z
# session 8). Sizes with cuBLAS cliffs (257, 288, 448) are left out: the model interpolates
# over the smooth curve.
LINEAR_MS = {1: 5.37, 16: 5.49, 32: 5.65, 64: 5.83, 128: 6.13, 256: 6.94, 320: 8.01,
             384: 9.06, 512: 10.26, 640: 12.85, 1024: 20.91, 2048: 41.78}  # fmt: skip
KV_BYTES = 131_072  # per token of context: 32 layers x 8 KV heads x 128 x (K, V) x bf16
COPY_BANDWIDTH = 3.01e12
DECODE_ATTENTION_EFFICIENCY = 0.78
PREFILL_ATTENTION_FLOPS = 380e12
ATTENTION_FLOPS_PER_PAIR = 4 * 32 * 4096  # QK and PV, 32 layers x 32 heads x 128
MIXED_STEP_MIN_MS = 16.0
NUM_BLOCKS = 25_000  # the H100's KV pool for this shape (~400k tokens): nothing is preempted
WEIGHTS_AT_COPY_CEILING_MS = 4.99  # the 15.01 GB one decode step reads, at 3.01 TB/s


@dataclass(frozen=True)
class Kernels:
    """How fast the modelled kernels are: as measured (the defaults), or closer to the card's
    ceilings."""

    # LINEAR_MS times this. Below 1 it is generous past ~1,000 rows, where the scaled curve
    # passes the 791 TFLOP/s matmul ceiling; the recipe's steps are mostly far below that.
    linear_scale: float = 1.0
    decode_attention_efficiency: float = DECODE_ATTENTION_EFFICIENCY
    mixed_step_min_ms: float = MIXED_STEP_MIN_MS


MEASURED = Kernels()
MIXED_AT_KERNEL_COST = Kernels(mixed_step_min_ms=0.0)
AT_CEILING = Kernels(WEIGHTS_AT_COPY_CEILING_MS / LINEAR_MS[1], 1.0, 0.0)


def linear_ms(rows: int) -> float:
    sizes = list(LINEAR_MS)
    if rows >= sizes[-1]:
        return LINEAR_MS[sizes[-1]] * rows / sizes[-1]
    i = bisect.bisect_left(sizes, rows)
    if sizes[i] == rows:
        return LINEAR_MS[rows]
    lo, hi = sizes[i - 1], sizes[i]
    return LINEAR_MS[lo] + (LINEAR_MS[hi] - LINEAR_MS[lo]) * (rows - lo) / (hi - lo)


def step_ms(out: SchedulerOutput, kernels: Kernels = MEASURED) -> float:
    """The modelled time of one step, from its rows and its requests' contexts."""
    decodes = out.scheduled[: out.num_decodes]
    chunks = out.scheduled[out.num_decodes :]
    rows = out.num_tokens
    context = sum(s.request.num_computed_tokens + 1 for s in decodes)
    pairs = sum(
        s.num_new_tokens * s.request.num_computed_tokens + s.num_new_tokens**2 / 2 for s in chunks
    )
    ms = linear_ms(rows) * kernels.linear_scale + 0.45 + 0.0015 * rows + 0.0035 * len(decodes)
    if decodes:
        bandwidth = COPY_BANDWIDTH * kernels.decode_attention_efficiency
        ms += 0.15 + context * KV_BYTES / bandwidth * 1e3
    ms += pairs * ATTENTION_FLOPS_PER_PAIR / PREFILL_ATTENTION_FLOPS * 1e3
    return max(ms, kernels.mixed_step_min_ms) if chunks else ms


def run(
    max_num_seqs: int, budget: int, longest_first: bool = False, kernels: Kernels = MEASURED
) -> dict[str, list[float]]:
    """Schedule the whole workload; per kind of step: [steps, modelled seconds]."""
    workload = lognormal_workload(500, (202, 179), 1.0, (4, 2048), 0)
    if longest_first:
        workload.sort(key=lambda r: -r.max_tokens)
    scheduler = Scheduler(
        SchedulerConfig(max_num_seqs=max_num_seqs, max_num_batched_tokens=budget),
        CacheConfig(enable_prefix_caching=False),
        NUM_BLOCKS,
    )
    for i, r in enumerate(workload):
        params = SamplingParams(max_tokens=r.max_tokens, ignore_eos=True)
        scheduler.add_request(Request(str(i), r.prompt_token_ids, params, frozenset(), 0.0, 4096))
    kinds: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    while scheduler.has_unfinished_requests():
        out = scheduler.schedule()
        n = out.num_decodes
        kind = "prefill" if out.num_tokens > n else f"decode {1 << (n.bit_length() - 1):>3}+"
        kinds[kind][0] += 1
        kinds[kind][1] += step_ms(out, kernels) / 1e3
        for s in out.scheduled:
            request, samples = s.request, s.samples
            request.num_computed_tokens += s.num_new_tokens
            if samples:
                request.append_output_token(0)
                if request.num_output_tokens >= request.sampling_params.max_tokens:
                    scheduler.finish(request, RequestStatus.FINISHED_LENGTH)
    return kinds


def print_table(
    title: str, tokens: int, kernels: Kernels, schedules: list[tuple[int, int, bool]]
) -> None:
    print(f"\n{title}")
    print("max_num_seqs  budget  order          steps  modelled s   tok/s")
    for seqs, budget, longest in schedules:
        kinds = run(seqs, budget, longest, kernels)
        steps = sum(k[0] for k in kinds.values())
        seconds = sum(k[1] for k in kinds.values())
        order = "longest first" if longest else "as drawn"
        print(
            f"{seqs:12d} {budget:7d}  {order:13s} {steps:6.0f} {seconds:11.2f} "
            f"{tokens / seconds:7,.0f}"
        )
        if (seqs, budget, longest, kernels) == (256, 8192, False, MEASURED):
            for kind in sorted(kinds, key=lambda k: (k == "prefill", len(k), k)):
                n, s = kinds[kind]
                print(f"    {kind:12s} {n:5.0f} steps {s:6.2f} s {s / n * 1e3:6.2f} ms")


def main() -> None:
    tokens = sum(r.max_tokens for r in lognormal_workload(500, (202, 179), 1.0, (4, 2048), 0))
    print(f"{tokens} output tokens; 7,000 tok/s is {tokens / 7000:.2f} s")
    recipe = (256, 8192, False)
    print_table(
        "The kernels as measured",
        tokens,
        MEASURED,
        [
            recipe,
            (256, 2048, False),
            (256, 1024, False),
            (256, 512, False),
            (512, 8192, False),
            (512, 1024, False),
            (256, 8192, True),
            (256, 512, True),
            (512, 512, True),
        ],
    )
    # Small budgets with longest first spread the prefill over the longest request's life:
    # every step then carries a prompt chunk, which only pays once mixed steps are cheap.
    spread = [(512, 256, True), (512, 128, True)]
    print_table(
        "Steps with prefill chunks at their kernels' cost (no 16 ms floor)",
        tokens,
        MIXED_AT_KERNEL_COST,
        [recipe, (256, 512, False), *spread],
    )
    print_table(
        "Linear layers and decode attention at the card's ceiling as well",
        tokens,
        AT_CEILING,
        [recipe, (256, 512, False), *spread],
    )


if __name__ == "__main__":
    main()
