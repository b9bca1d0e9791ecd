"""Tile configs of the paged decode-attention kernel (pagoda/kernels/triton_attention.py) on
the shapes the GPU recipes run: nano-vllm's batch of 256 ragged contexts (Qwen3-0.6B heads),
Llama-3.1-8B heads at batch 64 x 4k, and batch 1 at a short context (the latency recipe).

Each config is ((BLOCK_N, num_warps, num_stages), num_splits, min_chunk), None for a default;
``--splits`` sweeps the split count and the minimum span (printed as a grid), else the tiles.
Each timing replays a CUDA graph of launches cycling over per-layer KV caches (as in the
model, so small caches are not served from L2; gemv_sweep.time_graph).

    python benchmarks/decode_sweep.py [--splits] [WORD ...]   # only cases whose name has a WORD
"""

from __future__ import annotations

import itertools
import random
import sys
from functools import partial

import torch
from gemv_sweep import time_graph  # this folder's script (sys.path[0])

from pagoda.kernels.triton_attention import (
    decode_split_plan,
    paged_decode_attention,
    paged_decode_attention_ref,
)

BLOCK = 16


def _lognormal_contexts(n: int, mu: float) -> list[int]:
    rng = random.Random(n)
    return [min(2048, max(16, round(rng.lognormvariate(mu, 0.5)))) for _ in range(n)]


CASES = {  # name: (heads, kv_heads, context lengths)
    "nano b256 ctx 100-2048": (16, 8, [random.Random(0).randint(100, 2048) for _ in range(256)]),
    "8B b64 x 4096": (32, 8, [4096] * 64),
    "8B b8 x 1024": (32, 8, [1024] * 8),
    "8B b1 x 640": (32, 8, [640]),
    "8B b8 x 8192": (32, 8, [8192] * 8),
    "8B b1 x 32768": (32, 8, [32768]),
    # Recipe 3's decode batches (contexts of its FCFS schedule at these batch sizes).
    "serve b8": (32, 8, [1152, 1196, 1206, 1218, 1234, 1237, 1500, 1598]),
    "serve b24": (
        32,
        8,
        [
            581,
            626,
            633,
            635,
            650,
            677,
            694,
            704,
            714,
            716,
            732,
            735,
            744,
            762,
            774,
            798,
            809,
            817,
            958,
            998,
            1096,
            1100,
            1189,
            1497,
        ],
    ),
    **{
        f"serve b{n}": (32, 8, _lognormal_contexts(n, 6.5 if n < 64 else 6.0))
        for n in (2, 4, 16, 32, 128)
    },
    "serve b64": (32, 8, sorted(random.Random(1).randint(309, 1251) for _ in range(64))),
    "serve b200": (
        32,
        8,
        [min(2048, max(8, round(random.Random(i).lognormvariate(5.7, 0.7)))) for i in range(200)],
    ),
}


def case_inputs(heads: int, kv_heads: int, lens: list[int], layers: int):
    blocks = [-(-n // BLOCK) for n in lens]
    width, total = max(blocks), sum(blocks)
    perm = torch.randperm(total, device="cuda").int()
    tables = torch.zeros(len(lens), width, dtype=torch.int32, device="cuda")
    used = 0
    for i, nb in enumerate(blocks):
        tables[i, :nb] = perm[used : used + nb]
        used += nb
    caches = [
        torch.randn(2, total, BLOCK, kv_heads, 128, device="cuda", dtype=torch.bfloat16)
        for _ in range(layers)
    ]
    q = torch.randn(len(lens), heads, 128, device="cuda", dtype=torch.bfloat16)
    seq_lens = torch.tensor(lens, dtype=torch.int32, device="cuda")
    return q, caches, tables, seq_lens


def _launch(q, caches, tables, seq_lens, cfg, i: int) -> torch.Tensor:
    tile, num_splits, min_chunk = cfg
    return paged_decode_attention(
        q, caches[i], tables, seq_lens, 0.1, num_splits, config=tile, min_chunk=min_chunk
    )


SPLITS = (None, 1, 2, 4, 8, 16, 32)
CHUNKS = (None, 128, 256, 512)


def configs(split_sweep: bool) -> list[tuple]:
    """(tiles, num_splits, min_chunk); None everywhere is the shipped default."""
    if not split_sweep:
        tiles = itertools.product((32, 64, 128), (4, 8), (2, 3, 4))
        return [(None, None, None), *((t, None, None) for t in tiles)]
    return [(None, None, None), *itertools.product([(64, 4, 3)], SPLITS, CHUNKS)]


def main() -> None:
    print(torch.cuda.get_device_name())
    args = sys.argv[1:]
    split_sweep = "--splits" in args
    only = [a for a in args if a != "--splits"]  # case names containing one of these words
    for name, (heads, kv_heads, lens) in CASES.items():
        if only and not any(word in name for word in only):
            continue
        kv_bytes = sum(lens) * kv_heads * 128 * 2 * 2
        layers = max(2, min(28, -(-3 * 50 * 2**20 // kv_bytes)))
        q, caches, tables, seq_lens = case_inputs(heads, kv_heads, lens, layers)
        splits = decode_split_plan(len(lens), kv_heads, q.device)
        ref = paged_decode_attention_ref(q, caches[0], tables, seq_lens, 0.1)
        timed = []
        for cfg in configs(split_sweep):
            launch = partial(_launch, q, caches, tables, seq_lens, cfg)
            try:
                t = time_graph(launch, layers)
            except Exception as exc:  # noqa: BLE001 (out of shared memory etc.)
                print(f"  {cfg} failed: {type(exc).__name__}")
                continue
            err = (launch(0).float() - ref.float()).abs().max().item()
            timed.append((t, cfg, err))
        default = next(t for t, c, _ in timed if c == (None, None, None))
        if split_sweep:  # us per call: a row per split count, a column per minimum span
            grid = {(c[1], c[2]): t for t, c, _ in timed if c[0] is not None}
            print(f"{name}: us, splits x min_chunk {CHUNKS}")
            for n in SPLITS:
                print(f"  {n!s:>4}: " + " ".join(f"{grid[n, m] * 1e6:7.1f}" for m in CHUNKS))
        timed.sort(key=lambda x: x[0])
        best = ", ".join(
            f"{c} {t * 1e6:.1f} us {kv_bytes / t / 1e12:.2f} TB/s (err {e:.0e})"
            for t, c, e in timed[:5]
        )
        print(
            f"{name} (splits {splits}): default {default * 1e6:.1f} us "
            f"{kv_bytes / default / 1e12:.2f} TB/s\n    best: {best}",
            flush=True,
        )


if __name__ == "__main__":
    main()
