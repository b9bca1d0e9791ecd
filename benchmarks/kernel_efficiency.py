"""Recipe 4 of the GPU issue in one run: the card's copy bandwidth, paged decode attention at
batch 64 x 4,096 context, causal prefill attention over 8k tokens (torch's dense SDPA as the
baseline in the same run), and the whole-engine decode ITL = a + b x context fit at batch 1
over contexts 256..32k on the Llama-3.1-8B shape, with b against the KV-read floor.

    python benchmarks/kernel_efficiency.py [--skip-itl] [--output-json FILE]
    python benchmarks/kernel_efficiency.py --sweep-prefill   # the prefill kernel's tiles
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import torch
import torch.nn.functional as F
from gemv_sweep import time_graph  # this folder's script (sys.path[0])

from pagoda import LLM, SamplingParams
from pagoda.kernels.triton_attention import paged_decode_attention, prefill_attention

HEADS, KV_HEADS, DIM, BLOCK = 32, 8, 128, 16  # Llama-3.1-8B attention, bf16
LAYERS = 32
KV_BYTES_PER_TOKEN = LAYERS * KV_HEADS * DIM * 2 * 2  # K and V, bf16: 131,072


def cuda_time(fn, iters: int = 50) -> float:
    """Seconds per call of ``fn``: ``iters`` back-to-back calls between two CUDA events (the
    launches queue up while the device runs, so a short kernel's host overhead is hidden, as
    it is inside the engine's CUDA graphs)."""
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3 / iters


def copy_bandwidth() -> float:
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    return 2 * src.numel() / cuda_time(lambda: dst.copy_(src))


def decode_attention(batch: int, context: int) -> dict[str, float]:
    blocks_per_seq = context // BLOCK
    cache = torch.randn(
        2, batch * blocks_per_seq, BLOCK, KV_HEADS, DIM, dtype=torch.bfloat16, device="cuda"
    )
    tables = torch.randperm(batch * blocks_per_seq, device="cuda", dtype=torch.int32)
    tables = tables.view(batch, blocks_per_seq)
    lens = torch.full((batch,), context, dtype=torch.int32, device="cuda")
    q = torch.randn(batch, HEADS, DIM, dtype=torch.bfloat16, device="cuda")
    # Replayed from a CUDA graph, as the engine runs it: eager launches of a ~60 us kernel pair
    # let the host launch show through (66-142 us between runs, docs/perf.md).
    out = torch.empty_like(q)
    seconds = time_graph(
        lambda _: paged_decode_attention(q, cache, tables, lens, DIM**-0.5, out=out), 1
    )
    kv_bytes = batch * context * KV_HEADS * DIM * 2 * 2
    return {
        "batch": batch,
        "context": context,
        "us": seconds * 1e6,
        "bytes_per_s": kv_bytes / seconds,
    }


def prefill(tokens: int, config: tuple[int, int, int, int] | None = None) -> dict[str, float]:
    blocks = tokens // BLOCK
    cache = torch.randn(2, blocks, BLOCK, KV_HEADS, DIM, dtype=torch.bfloat16, device="cuda")
    tables = torch.arange(blocks, dtype=torch.int32, device="cuda").view(1, blocks)
    q = torch.randn(tokens, HEADS, DIM, dtype=torch.bfloat16, device="cuda")
    qsl = torch.tensor([0, tokens], dtype=torch.int32, device="cuda")
    lens = torch.tensor([tokens], dtype=torch.int32, device="cuda")
    ours = cuda_time(
        lambda: prefill_attention(
            q, q, q, cache, qsl, lens, tables, DIM**-0.5, max_query_len=tokens, config=config
        )
    )
    # Dense causal SDPA on the same shapes (K/V repeated for GQA), not paged: the baseline.
    qd = q.transpose(0, 1).unsqueeze(0)
    kd = cache[0].reshape(tokens, KV_HEADS, DIM).transpose(0, 1).unsqueeze(0)
    kd = kd.repeat_interleave(HEADS // KV_HEADS, dim=1)
    vd = cache[1].reshape(tokens, KV_HEADS, DIM).transpose(0, 1).unsqueeze(0)
    vd = vd.repeat_interleave(HEADS // KV_HEADS, dim=1)
    dense = cuda_time(lambda: F.scaled_dot_product_attention(qd, kd, vd, is_causal=True))
    flops = 2 * tokens * tokens * HEADS * DIM  # causal: half of 4 * S^2 * H * D
    return {
        "tokens": tokens,
        "ms": ours * 1e3,
        "tflops": flops / ours / 1e12,
        "sdpa_ms": dense * 1e3,
        "sdpa_tflops": flops / dense / 1e12,
    }


def itl_fit(contexts: list[int], new_tokens: int = 48) -> dict[str, object]:
    """Decode ms/token of the whole engine at batch 1 for each context; least-squares fit."""
    llm = LLM(
        "benchmarks/configs/llama-3.1-8b",
        tokenizer="benchmarks/tokenizer",
        load_format="dummy",
        dtype="bfloat16",
        max_model_len=max(contexts) + new_tokens,
        enable_prefix_caching=False,
        max_num_seqs=8,
    )
    engine = llm.llm_engine
    params = SamplingParams(temperature=0, max_tokens=new_tokens, ignore_eos=True)
    points = []
    for i, context in enumerate([contexts[0], *contexts]):  # the first run only warms up
        engine.add_request(
            str(i), {"prompt_token_ids": [(7 * t) % 10000 for t in range(context)]}, params
        )
        stamps = []
        while engine.has_unfinished_requests():
            for out in engine.step():
                stamps += [time.perf_counter()] * (len(out.outputs[0].token_ids) - len(stamps))
        if i:
            points.append((context, (stamps[-1] - stamps[1]) / (len(stamps) - 2)))
    x = torch.tensor([float(c) for c, _ in points], dtype=torch.float64)
    y = torch.tensor([t for _, t in points], dtype=torch.float64)
    design = torch.stack([torch.ones_like(x), x], dim=1)
    a, b = torch.linalg.lstsq(design, y.unsqueeze(1)).solution.squeeze(1).tolist()
    llm.llm_engine.executor.runner.release()
    return {
        "points_ms": [(c, t * 1e3) for c, t in points],
        "a_ms": a * 1e3,
        "b_s_per_token": b,
        "b_bytes_per_s": KV_BYTES_PER_TOKEN / b,
    }


def sweep_prefill(tokens: int = 8192) -> None:
    """Causal prefill TFLOP/s of each (BLOCK_M, BLOCK_N, num_warps, num_stages), best first."""
    timed = []
    for config in [None, *itertools.product((64, 128), (32, 64, 128), (4, 8), (2, 3, 4))]:
        try:
            timed.append((prefill(tokens, config)["tflops"], config))
        except Exception as exc:  # noqa: BLE001 (out of shared memory etc.)
            print(f"  {config} failed: {type(exc).__name__}")
    timed.sort(key=lambda t: -t[0])
    print("causal prefill 8k, TFLOP/s: " + ", ".join(f"{c} {t:.0f}" for t, c in timed))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-itl", action="store_true")
    parser.add_argument("--output-json", default=None)
    parser.add_argument(
        "--sweep-prefill", action="store_true", help="only time the prefill kernel's tile configs"
    )
    args = parser.parse_args()
    print(torch.cuda.get_device_name())
    if args.sweep_prefill:
        sweep_prefill()
        return
    ceiling = copy_bandwidth()
    print(f"copy bandwidth: {ceiling / 1e12:.2f} TB/s")
    results: dict[str, object] = {"copy_bytes_per_s": ceiling}
    decode = [decode_attention(64, 4096), decode_attention(8, 8192), decode_attention(1, 32768)]
    for d in decode:
        print(
            f"decode attention {d['batch']} x {d['context']}: {d['us']:.0f} us, "
            f"{d['bytes_per_s'] / 1e12:.2f} TB/s ({d['bytes_per_s'] / ceiling:.0%} of copy)"
        )
    results["decode"] = decode
    p = prefill(8192)
    print(
        f"causal prefill 8k: {p['ms']:.2f} ms, {p['tflops']:.0f} TFLOP/s; dense SDPA "
        f"(not paged) {p['sdpa_ms']:.2f} ms, {p['sdpa_tflops']:.0f} TFLOP/s"
    )
    results["prefill"] = p
    if not args.skip_itl:
        fit = itl_fit([256, 1024, 2048, 4096, 8192, 16384, 32768])
        for c, ms in fit["points_ms"]:
            print(f"ITL at context {c}: {ms:.3f} ms")
        b = fit["b_bytes_per_s"]
        print(
            f"fit: a = {fit['a_ms']:.3f} ms, b = {fit['b_s_per_token'] * 1e9:.2f} ns/token "
            f"-> {b / 1e12:.2f} TB/s over {KV_BYTES_PER_TOKEN} bytes/token "
            f"({b / ceiling:.0%} of copy)"
        )
        results["itl"] = fit
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
