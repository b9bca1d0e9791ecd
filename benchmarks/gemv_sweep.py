"""Linear layers at decode batch sizes on CUDA: cuBLAS (``F.linear``) against the Triton GEMV
(pagoda/kernels/triton_gemv.py) over its tile configs, on the Llama-3.1-8B projection shapes.

Each timing replays a CUDA graph of back-to-back launches that cycle through enough copies of
the weight that none is still in L2 (as in the model, where every layer has its own weights).

    python benchmarks/gemv_sweep.py [--rows 1,2,4,8] [--quick]
    python benchmarks/gemv_sweep.py --silu-rows 24,32,64,128   # the fused gate-up only
"""

from __future__ import annotations

import argparse
import itertools
from functools import partial

import torch
import torch.nn.functional as F

from pagoda.kernels import triton_gemv, triton_ops
from pagoda.kernels.activation_ref import silu_and_mul

SHAPES = {  # name: (N, K) of the [N, K] weight
    "qkv": (6144, 4096),
    "o_proj": (4096, 4096),
    "gate_up": (28672, 4096),
    "down": (4096, 14336),
    "lm_head": (128256, 4096),
}
GATE_UP_SHAPES = {"Llama-3.1-8B": (28672, 4096), "Qwen3-0.6B": (6144, 1024)}
L2_BYTES = 50 * 2**20


def weight_copies(n: int, k: int) -> tuple[list[torch.Tensor], int]:
    """Enough random [n, k] bfloat16 weights that cycling through them defeats L2."""
    copies = max(1, -(-3 * L2_BYTES // (n * k * 2)))
    return [
        torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02 for _ in range(copies)
    ], copies


def time_graph(fn, copies: int, reps: int = 3) -> float:
    """Seconds per call of fn(i) (i cycles over the weight copies), from a graph replay."""
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        for i in range(copies):
            fn(i)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    calls = max(copies, 24)
    with torch.cuda.graph(graph, stream=stream):
        for i in range(calls):
            fn(i % copies)
    graph.replay()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3 / calls)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", default="1,2,4,8")
    parser.add_argument("--sweep-rows", default="1,4", help="row counts to sweep configs at")
    parser.add_argument("--quick", action="store_true", help="default configs only")
    parser.add_argument(
        "--silu-rows", default="", help="only the fused gate-up + SiLU, at these row counts"
    )
    args = parser.parse_args()
    rows = [int(r) for r in args.rows.split(",")]
    if args.silu_rows:
        sweep_silu_rows([int(r) for r in args.silu_rows.split(",")])
        return
    configs = [(16, 128, 4, 6), (16, 256, 4, 4)]
    configs += list(itertools.product((32, 64), (128, 256), (4, 8), (3, 4, 6)))
    print(f"{torch.cuda.get_device_name()}; {len(configs)} configs")
    for name, (n, k) in SHAPES.items():
        sweep_rows = [int(r) for r in args.sweep_rows.split(",")]
        sweep_shape(name, n, k, rows, [] if args.quick else configs, sweep_rows)
        torch.cuda.empty_cache()


def sweep_shape(
    name: str, n: int, k: int, rows: list[int], configs: list, sweep_rows: list[int]
) -> None:
    """Print cuBLAS and Triton timings of one weight shape at each row count."""
    nbytes = n * k * 2
    weights, copies = weight_copies(n, k)

    def tb_s(seconds: float) -> str:
        return f"{seconds * 1e6:7.2f} us {nbytes / seconds / 1e12:5.2f} TB/s"

    for m in rows:
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        ref = F.linear(x, weights[0])
        cublas = time_graph(partial(_cublas, x, weights), copies)
        triton = time_graph(partial(_triton, x, weights, None), copies)
        err = (triton_gemv.gemv(x, weights[0]).float() - ref.float()).abs().max().item()
        line = f"{name:8s} M={m}: cuBLAS {tb_s(cublas)} | triton {tb_s(triton)} (err {err:.1e})"
        if configs and m in sweep_rows:
            timed = []
            for cfg in configs:
                if k % cfg[1]:
                    continue
                try:
                    timed.append((time_graph(partial(_triton, x, weights, cfg), copies, 2), cfg))
                except Exception as exc:  # noqa: BLE001 (out of shared memory etc.)
                    print(f"  {cfg} failed: {type(exc).__name__}")
            timed.sort()
            line += "\n    best: " + ", ".join(f"{c} {nbytes / t / 1e12:.2f}" for t, c in timed[:4])
        if name == "gate_up":
            if configs and m == 1:
                timed = []
                for cfg in configs:
                    try:
                        timed.append((time_graph(partial(_fused, x, weights, cfg), copies, 2), cfg))
                    except Exception as exc:  # noqa: BLE001
                        print(f"  fused {cfg} failed: {type(exc).__name__}")
                timed.sort()
                line += "\n    fused best: " + ", ".join(
                    f"{c} {nbytes / t / 1e12:.2f}" for t, c in timed[:4]
                )
            fused = time_graph(partial(_fused, x, weights, None), copies)
            unfused = time_graph(partial(_unfused, x, weights), copies)
            err = (
                (triton_gemv.gemv_silu_and_mul(x, weights[0]).float() - silu_and_mul(ref).float())
                .abs()
                .max()
                .item()
            )
            line += f"\n    silu fused {tb_s(fused)} vs cuBLAS+silu {tb_s(unfused)} (err {err:.1e})"
        print(line, flush=True)


def sweep_silu_rows(rows: list[int]) -> None:
    """The fused gate-up + SiLU GEMV (shipped tiles, then the best three of a grid) against
    cuBLAS plus the Triton SiLU-and-mul kernel (the engine's path without it), microseconds."""
    configs = list(itertools.product((32, 64), (128, 256), (4, 8), (3, 4)))
    print(f"{torch.cuda.get_device_name()}; {len(configs)} configs")
    for name, (n, k) in GATE_UP_SHAPES.items():
        weights, copies = weight_copies(n, k)
        for m in rows:
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            unfused = time_graph(partial(_unfused, x, weights), copies)
            fused = time_graph(partial(_fused, x, weights, None), copies)
            timed = []
            for cfg in configs:
                try:
                    timed.append((time_graph(partial(_fused, x, weights, cfg), copies, 2), cfg))
                except Exception:  # noqa: BLE001 (out of shared memory)
                    continue
            timed.sort()
            best = ", ".join(f"{c} {t * 1e6:.1f}" for t, c in timed[:3])
            print(
                f"{name} gate_up M={m}: cuBLAS + SiLU {unfused * 1e6:.1f} us, fused "
                f"{fused * 1e6:.1f} us; best {best}",
                flush=True,
            )
        del weights
        torch.cuda.empty_cache()


def _cublas(x, weights, i):
    return F.linear(x, weights[i])


def _triton(x, weights, config, i):
    return triton_gemv.gemv(x, weights[i], config=config)


def _fused(x, weights, config, i):
    return triton_gemv.gemv_silu_and_mul(x, weights[i], config=config)


def _unfused(x, weights, i):
    return triton_ops.silu_and_mul(F.linear(x, weights[i]))


if __name__ == "__main__":
    main()
