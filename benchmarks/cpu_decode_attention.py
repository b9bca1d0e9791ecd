"""The CPU decode-attention C kernel over one decode step of the default model (SmolLM2-135M:
30 layers, 9 query and 3 KV heads of 64, float32, 16-token blocks) by batch size, with the
caches cold as in the engine: every layer has its own cache, block tables are random, and
before each call a sweep over 1/30 of the weights' 540 MB evicts what the last call left, as
a layer's linear layers do. Prints ms per 30-layer step and the K/V bytes read per second.

    python benchmarks/cpu_decode_attention.py [--batches 1,8,36,64] [--threads 2]
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from pagoda.kernels.cpu_decode_attention import paged_decode_attention

LAYERS, HEADS, KV_HEADS, HEAD_DIM, BLOCK = 30, 9, 3, 64, 16
WEIGHT_BYTES = 540e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", default="1,2,4,8,16,36,64")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--context", default="50:450", help="uniform context range")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    low, high = (int(v) for v in args.context.split(":"))
    num_blocks = 64 * (high // BLOCK + 1)
    caches = [torch.randn(2, num_blocks, BLOCK, KV_HEADS, HEAD_DIM) for _ in range(LAYERS)]
    sweep = torch.randn(int(WEIGHT_BYTES / 4 / LAYERS))
    for batch in (int(b) for b in args.batches.split(",")):
        rng = random.Random(batch)
        lens = [rng.randint(low, high) for _ in range(batch)]
        width = max(lens) // BLOCK + 1
        tables = torch.randperm(num_blocks)[: batch * width].view(batch, width).int()
        seq_lens = torch.tensor(lens, dtype=torch.int32)
        q = torch.randn(batch, HEADS, HEAD_DIM)
        best = float("inf")
        for _ in range(args.repeats):
            spent = 0.0
            for cache in caches:
                sweep.mul_(1.0)
                start = time.perf_counter()
                paged_decode_attention(q, cache, tables, seq_lens, HEAD_DIM**-0.5)
                spent += time.perf_counter() - start
            best = min(best, spent)
        kv_bytes = sum(lens) * KV_HEADS * HEAD_DIM * 2 * 4 * LAYERS
        print(f"batch {batch:3d}: {best * 1e3:7.2f} ms per step, {kv_bytes / best / 1e9:5.1f} GB/s")


if __name__ == "__main__":
    main()
