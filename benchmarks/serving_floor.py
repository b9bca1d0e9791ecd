"""A lower bound on recipe 3's time (Llama-3.1-8B shape, 500 lognormal requests at once) from
the H100's measured ceilings, with no engine in it: every request decodes from the first step,
each decode step reads all weights but the embedding plus its requests' K/V at the copy
bandwidth, or computes its tokens at the bf16 matmul ceiling, whichever is longer, and the
prompts' compute fills the steps' idle compute for free (``--prefill-hidden``) or not.

    python benchmarks/serving_floor.py [--bandwidth 3.01e12] [--peak 791e12]
"""

from __future__ import annotations

import argparse

from pagoda.bench.workload import lognormal_workload

# Llama-3.1-8B: bytes of weights a decode step reads (all but the input embedding), matmul
# parameters per token (layers + LM head), K/V bytes per token of context (32 layers x 8 KV
# heads x 128 x 2 x bf16), and the attention's score/value FLOPs per query-key pair.
WEIGHT_BYTES = 15.01e9
PARAMS = 6.98e9 + 0.525e9
KV_BYTES = 131_072
ATTN_FLOPS = 4 * 32 * 4096


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bandwidth", type=float, default=3.01e12, help="bytes/s (copy)")
    parser.add_argument("--peak", type=float, default=791e12, help="bf16 matmul FLOP/s")
    args = parser.parse_args()
    requests = lognormal_workload(500, (202, 179), 1.0, (4, 2048), 0)
    prompts = [len(r.prompt_token_ids) for r in requests]
    outputs = [r.max_tokens for r in requests]
    decode = slack = 0.0
    for step in range(1, max(outputs)):
        alive = [p for p, o in zip(prompts, outputs, strict=True) if o > step]
        memory = (WEIGHT_BYTES + sum(p + step for p in alive) * KV_BYTES) / args.bandwidth
        compute = len(alive) * 2 * PARAMS / args.peak
        decode += max(memory, compute)
        slack += max(0.0, memory - compute)
    prefill = sum(p * 2 * PARAMS + p * p / 2 * ATTN_FLOPS for p in prompts) / args.peak
    tokens = sum(outputs)
    hidden = decode + max(0.0, prefill - slack)
    print(f"{len(requests)} requests, {sum(prompts)} prompt and {tokens} output tokens")
    print(f"decode steps: {max(outputs) - 1}, {decode:.2f} s at the ceilings")
    print(f"prefill compute {prefill:.2f} s; idle compute in the decode steps {slack:.2f} s")
    print(f"floor, prefill hidden in idle compute: {hidden:.2f} s = {tokens / hidden:,.0f} tok/s")
    both = decode + prefill
    print(f"floor, prefill on its own:            {both:.2f} s = {tokens / both:,.0f} tok/s")


if __name__ == "__main__":
    main()
