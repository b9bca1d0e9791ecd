"""One decode step's linear layers (Llama-3.1-8B shape: 32 layers' qkv, o_proj, gate_up and
down, and the LM head) by batch rows on CUDA: cuBLAS (``F.linear``), and the faster of cuBLAS
and the Triton GEMV where the GEMV takes the rows, against the weights read at the copy
bandwidth and the rows computed at the bf16 matmul ceiling. Timings as in gemv_sweep.py
(graph replays cycling through enough weight copies to defeat L2).

    python benchmarks/linear_curve.py [--rows 1,8,16,...]
"""

from __future__ import annotations

import argparse
from functools import partial

import torch
from gemv_sweep import L2_BYTES, SHAPES, _cublas, _triton, time_graph

LAYERS = 32
LAYER_SHAPES = ("qkv", "o_proj", "gate_up", "down")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", default="1,8,16,24,32,48,64,96,128,192,256,384,512")
    parser.add_argument("--bandwidth", type=float, default=3.01e12, help="bytes/s (copy)")
    parser.add_argument("--peak", type=float, default=791e12, help="bf16 matmul FLOP/s")
    args = parser.parse_args()
    rows = [int(r) for r in args.rows.split(",")]
    cublas: dict[tuple[str, int], float] = {}
    best: dict[tuple[str, int], float] = {}
    for name, (n, k) in SHAPES.items():
        copies = max(1, -(-3 * L2_BYTES // (n * k * 2)))
        weights = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
        for m in rows:
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            cublas[name, m] = best[name, m] = time_graph(partial(_cublas, x, weights), copies)
            if m <= 64:  # the GEMV's tiles hold at most 64 rows
                triton = time_graph(partial(_triton, x, weights, None), copies)
                best[name, m] = min(best[name, m], triton)
            print(
                f"{name:8s} M={m:3d}: cuBLAS {cublas[name, m] * 1e6:7.1f} us, best "
                f"{best[name, m] * 1e6:7.1f} us",
                flush=True,
            )
        del weights
        torch.cuda.empty_cache()
    params = LAYERS * sum(n * k for s, (n, k) in SHAPES.items() if s in LAYER_SHAPES)
    params += SHAPES["lm_head"][0] * SHAPES["lm_head"][1]
    print(
        f"weights at {args.bandwidth / 1e12:.2f} TB/s: {params * 2 / args.bandwidth * 1e3:.3f} ms"
    )
    for m in rows:

        def step(times: dict[tuple[str, int], float], m: int = m) -> float:
            return LAYERS * sum(times[s, m] for s in LAYER_SHAPES) + times["lm_head", m]

        print(
            f"M={m:3d}: cuBLAS {step(cublas) * 1e3:.3f} ms, best {step(best) * 1e3:.3f} ms, "
            f"compute at the ceiling {2 * m * params / args.peak * 1e3:.3f} ms"
        )


if __name__ == "__main__":
    main()
