"""GGUF quantized linear layers: the CPU block kernel against ``F.linear`` of the dequantized
weight, the loader's blocks against its dequantized tensors, and the ``gguf`` quant method on
the real default model and through ``--quantization``."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_models import make_tiny_checkpoint

from pagoda import LLM, SamplingParams
from pagoda.config import resolve_model_path
from pagoda.core.loader import iter_gguf
from pagoda.interfaces import GGUFBlocks
from pagoda.kernels import cpu_gguf_linear
from pagoda.layers.linear import LinearBase
from pagoda.plugin_manager import set_plugin_manager

needs_kernel = pytest.mark.skipif(
    cpu_gguf_linear.load() is None, reason="no C compiler or no AVX-512"
)

TYPES = {"Q4_1": gguf.GGMLQuantizationType.Q4_1, "Q8_0": gguf.GGMLQuantizationType.Q8_0}


def quantized(out_features: int, in_features: int, type_name: str, seed: int):
    """Raw GGUF blocks of a random weight, and the weight they dequantize to."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((out_features, in_features), dtype=np.float32)
    raw = gguf.quants.quantize(w, TYPES[type_name])
    dequantized = torch.from_numpy(gguf.quants.dequantize(raw, TYPES[type_name]).copy())
    return torch.from_numpy(raw), dequantized


@needs_kernel
@pytest.mark.parametrize("type_name", ["Q4_1", "Q8_0"])
@pytest.mark.parametrize("shape", [(32, 32), (96, 576), (64, 1536)])
@pytest.mark.parametrize("rows", [0, 1, 2, 3, 5, 7, 12, 13, 36, 100])
def test_kernel_matches_dequantized_linear(
    type_name: str, shape: tuple[int, int], rows: int
) -> None:
    """Every register-tile size (1-12 rows, then several tiles), in_features past one
    dequantized chunk (256) and not a multiple of it; x is a strided view; with a bias."""
    n, k = shape
    raw, w = quantized(n, k, type_name, seed=n + k)
    packed = cpu_gguf_linear.pack(raw, type_name)
    assert packed is not None and (packed.out_features, packed.in_features) == (n, k)
    torch.manual_seed(rows)
    x = torch.randn(rows, k + 8)[:, 5 : 5 + k]
    bias = torch.randn(n)
    assert cpu_gguf_linear.supports(x)
    out = cpu_gguf_linear.linear(x, packed, bias)
    assert out.shape == (rows, n)
    ref = F.linear(x.double(), w.double(), bias.double()).float()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-4)


def test_pack_refuses_what_the_kernel_cannot_take() -> None:
    raw, _ = quantized(32, 64, "Q4_1", seed=0)
    assert cpu_gguf_linear.pack(raw, "Q4_K") is None  # another block type
    raw, _ = quantized(48, 64, "Q8_0", seed=0)
    assert cpu_gguf_linear.pack(raw, "Q8_0") is None  # 48 outputs: not whole panels of 32


@pytest.fixture(scope="module")
def default_gguf() -> str:
    return resolve_model_path("smollm2")


def test_loader_blocks_match_the_dequantized_tensors(default_gguf: str) -> None:
    """Each quantized tensor carries its blocks, rows in the same (rope-unpermuted) order."""
    from pagoda.config import load_hf_config

    config = load_hf_config(default_gguf)
    seen = set()
    for name, tensor in iter_gguf(default_gguf, config):
        blocks = getattr(tensor, "source_blocks", None)
        if name.endswith("norm.weight"):
            assert blocks is None  # float32 in the file
            continue
        assert isinstance(blocks, GGUFBlocks)
        if name.startswith("model.layers.0.") or name == "model.embed_tokens.weight":
            kind = gguf.GGMLQuantizationType[blocks.type_name]
            again = torch.from_numpy(gguf.quants.dequantize(blocks.raw.numpy(), kind).copy())
            torch.testing.assert_close(again, tensor, rtol=0, atol=0)
            seen.add(name.rsplit(".", 2)[-2])
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "down_proj", "embed_tokens"} <= seen


@needs_kernel
def test_default_model_runs_every_linear_from_blocks(default_gguf: str) -> None:
    """The default GGUF model gets the gguf method: every linear layer and the (tied) LM head
    keep packed blocks, no parameter keeps the loader's raw blocks, and greedy generation
    equals the same model run from the dequantized weights (within float32 rounding: the
    tokens of an 8-prompt batch)."""
    llm = LLM(dtype="float32", kv_cache_memory=64 << 20)
    model = llm.llm_engine.executor.runner.model
    linears = [m for m in model.modules() if isinstance(m, LinearBase)]
    assert len(linears) == 30 * 4
    assert all(m.gguf_weight is not None for m in linears)
    assert model.lm_head.gguf_weight.format == cpu_gguf_linear.FORMATS["Q8_0"][0]
    assert not any(hasattr(p, "source_blocks") for p in model.parameters())

    prompts = [f"Question {i}: what is {i} plus {i + 3}?" for i in range(8)]
    params = SamplingParams(temperature=0, max_tokens=16)
    from_blocks = [o.outputs[0].token_ids for o in llm.generate(prompts, params, use_tqdm=False)]
    for m in [*linears, model.lm_head]:
        m.gguf_weight = None  # back to the dequantized weight
    dequantized = [o.outputs[0].token_ids for o in llm.generate(prompts, params, use_tqdm=False)]
    assert from_blocks == dequantized


def test_quantization_flag(tmp_path: Path, tokenizer_dir: Path) -> None:
    """``quantization="gguf"`` on a safetensors model runs it unquantized (no blocks to keep);
    an unknown name is an error listing the registered methods."""
    path = str(make_tiny_checkpoint("LlamaForCausalLM", tmp_path / "m", tokenizer_dir))
    out = LLM(path, quantization="gguf", kv_cache_memory=8 << 20).generate(
        [{"prompt_token_ids": [1, 2, 3]}], SamplingParams(temperature=0, max_tokens=4), False
    )
    assert len(out[0].outputs[0].token_ids) == 4
    with pytest.raises(ValueError, match="'awq' is not registered; registered: .*gguf"):
        LLM(path, quantization="awq", kv_cache_memory=8 << 20)


def test_gguf_file_runs_dequantized_without_the_gguf_plugin(
    default_gguf: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the gguf plugin left out of PAGODA_PLUGINS, a GGUF file still loads (its tensors
    are dequantized anyway) and its linear layers run unquantized."""
    monkeypatch.setenv("PAGODA_PLUGINS", "llama,torch_attention")
    set_plugin_manager(None)
    try:
        llm = LLM(kv_cache_memory=16 << 20)
        model = llm.llm_engine.executor.runner.model
        assert not any(hasattr(m, "gguf_weight") for m in model.modules())
        out = llm.generate(["The capital of France is"], SamplingParams(max_tokens=4), False)
        assert len(out[0].outputs[0].token_ids) == 4
    finally:
        set_plugin_manager(None)
