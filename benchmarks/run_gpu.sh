#!/usr/bin/env bash
# Every GPU recipe of docs/perf.md in one run (one device call): the CUDA parity tests, then
# decode latency (Llama-3.1-8B shape), small-model throughput (nano-vllm's recipe, Qwen3-0.6B
# shape) and 8B serving-style throughput, each with transformers in the same process, and the
# kernel-efficiency recipe (benchmarks/kernel_efficiency.py). Results land in $OUT (or ./bench-out).
#
#   bash benchmarks/run_gpu.sh            # everything
#   bash benchmarks/run_gpu.sh latency    # one part: tests | latency | nano | serving |
#                                         #   kernels | qwen2 | eager
#
# Models are the config.json files under benchmarks/configs/ with dummy weights; the tokenizer
# is benchmarks/tokenizer (SmolLM2's, only used to detokenize: prompts are token ids).
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench-out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PARTS="${*:-tests latency nano serving kernels}"
# HF=0 skips the transformers baselines (e.g. to re-time pagoda alone after a change).
if [ "${HF:-1}" = 0 ]; then LAT_HF=""; NANO_HF=""; SERVE_HF=""; else
  LAT_HF="--compare hf --hf-output-len 128 --hf-num-iters 1"; NANO_HF="--compare hf --hf-num-prompts 64"
  SERVE_HF="--compare hf --hf-num-prompts 16"; fi
TOK="--tokenizer benchmarks/tokenizer --load-format dummy"
pagoda() { python3 -c 'import sys; from pagoda.cli import main; sys.argv[0] = "pagoda"; main()' -v "$@"; }

{
  date -u +"date: %Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c 'import torch, triton, transformers; print("torch", torch.__version__, "triton", triton.__version__, "transformers", transformers.__version__)'
} | tee "$OUT/env.txt"

for part in $PARTS; do
  case $part in
  tests)
    python3 -m pytest -q -x -m cuda tests/test_cuda_engine.py tests/test_triton_gemv.py \
      tests/test_triton_kernels.py 2>&1 \
      | tee "$OUT/tests.log" ;;
  latency)
    # Recipe 1: batch 1, 128 prompt tokens, 1024 output tokens, bf16. transformers' eager decode
    # is host-bound (~86 ms/token): it runs 128 output tokens once, which gives its ms/token.
    pagoda bench latency benchmarks/configs/llama-3.1-8b $TOK --dtype bfloat16 \
      --max-model-len 2048 --batch-size 1 --input-len 128 --output-len 1024 --num-iters 3 \
      $LAT_HF \
      --output-json "$OUT/latency.json" 2>&1 | tee "$OUT/latency.log" ;;
  nano)
    # Recipe 2: nano-vllm's bench.py (256 requests, 133,966 output tokens, temperature 0.6).
    # transformers runs the first 64 requests as one padded batch (all 256 take far too long).
    pagoda bench throughput benchmarks/configs/qwen3-0.6b $TOK --dtype bfloat16 \
      --workload nano-vllm --num-prompts 256 --input-len 100:1024 --output-len 100:1024 \
      --temperature 0.6 --max-model-len 4096 --max-num-seqs 256 --max-num-batched-tokens 16384 \
      $NANO_HF \
      --output-json "$OUT/nano.json" 2>&1 | tee "$OUT/nano.log" ;;
  serving)
    # Recipe 3: Llama-3.1-8B shape, 500 requests at once, lognormal lengths (means 202 in,
    # 179 out, clipped to [4, 2048]), prefix caching off. transformers: the first 16 requests
    # as one padded batch.
    pagoda bench throughput benchmarks/configs/llama-3.1-8b $TOK --dtype bfloat16 \
      --workload lognormal --num-prompts 500 --input-len 202 --output-len 179 \
      --length-clip 4:2048 --temperature 0 --max-model-len 4096 --max-num-seqs 256 \
      --max-num-batched-tokens 8192 --no-enable-prefix-caching \
      $SERVE_HF \
      --output-json "$OUT/serving.json" 2>&1 | tee "$OUT/serving.log" ;;
  kernels)
    # Recipe 4: copy ceiling, decode and prefill attention kernels, and the ITL fit.
    python3 benchmarks/kernel_efficiency.py --output-json "$OUT/kernels.json" 2>&1 \
      | tee "$OUT/kernels.log" ;;
  qwen2)
    # The same workload on the Qwen2.5-0.5B shape (head_dim 64, QKV bias), pagoda only.
    pagoda bench throughput benchmarks/configs/qwen2.5-0.5b $TOK --dtype bfloat16 \
      --workload nano-vllm --num-prompts 256 --input-len 100:1024 --output-len 100:1024 \
      --temperature 0.6 --max-model-len 4096 --max-num-seqs 256 --max-num-batched-tokens 16384 \
      --output-json "$OUT/qwen2.json" 2>&1 | tee "$OUT/qwen2.log" ;;
  eager)
    # The nano-vllm recipe without CUDA graphs, to show what they buy.
    pagoda bench throughput benchmarks/configs/qwen3-0.6b $TOK --dtype bfloat16 --enforce-eager \
      --workload nano-vllm --num-prompts 256 --input-len 100:1024 --output-len 100:1024 \
      --temperature 0.6 --max-model-len 4096 --max-num-seqs 256 --max-num-batched-tokens 16384 \
      --output-json "$OUT/eager.json" 2>&1 | tee "$OUT/eager.log" ;;
  *) echo "unknown part $part" ;;
  esac
done
