"""The `pagoda` command: help, the bench group, `pagoda plugins` and `pagoda generate`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
from tiny_models import make_tiny_checkpoint

import pagoda.cli
from pagoda.plugin_manager import PLUGINS_ENV, set_plugin_manager


@pytest.fixture(autouse=True)
def fresh_cli(monkeypatch: pytest.MonkeyPatch):
    """No allow-list, no process-wide plugin manager, and the click group's commands restored
    afterwards (main() adds the bench group and plugin commands to it)."""
    monkeypatch.delenv(PLUGINS_ENV, raising=False)
    monkeypatch.setattr(pagoda.cli.cli, "commands", dict(pagoda.cli.cli.commands))
    set_plugin_manager(None)
    yield
    set_plugin_manager(None)


def run_main(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> str:
    """Run ``pagoda ARGS`` through the console script's function; return its stdout."""
    monkeypatch.setattr(sys, "argv", ["pagoda", *args])
    with pytest.raises(SystemExit) as excinfo:
        pagoda.cli.main()
    out, err = capsys.readouterr()
    assert excinfo.value.code == 0, err
    return out


def test_console_script_help_lists_every_command() -> None:
    """The installed `pagoda` script runs and lists the built-in commands and bench."""
    exe = shutil.which("pagoda", path=os.path.dirname(sys.executable))
    assert exe is not None, "the pagoda console script is not installed beside python"
    result = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: pagoda")
    commands = result.stdout.split("Commands:")[1].split()
    for command in ("bench", "chat", "generate", "plugins"):
        assert command in commands


def test_bench_help_lists_throughput_and_latency(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = run_main(["bench", "--help"], monkeypatch, capsys)
    # (click names the program after how the process was started, so not checked here)
    assert out.startswith("Usage: ") and "bench [OPTIONS] COMMAND" in out.splitlines()[0]
    commands = out.split("Commands:")[1].split()
    assert "throughput" in commands and "latency" in commands


def usage_error(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> str:
    """Run ``pagoda ARGS``, which must stop with click's usage error (exit status 2); return
    its standard error."""
    monkeypatch.setattr(sys, "argv", ["pagoda", *args])
    with pytest.raises(SystemExit) as excinfo:
        pagoda.cli.main()
    err = capsys.readouterr().err
    assert excinfo.value.code == 2, err
    return err


BAD_FLAGS = {  # flags -> click's error line
    "--max-num-seqs 0": "Error: max_num_seqs must be at least 1, got 0",
    "--max-model-len 600": "Error: max_model_len 600 is longer than the model's 512",
}


@pytest.mark.parametrize("flags", list(BAD_FLAGS))
@pytest.mark.parametrize("command", ["bench throughput", "bench latency", "generate", "serve"])
def test_a_bad_engine_flag_is_a_usage_error_before_anything_loads(
    tmp_path: Path,
    command: str,
    flags: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model = str(make_tiny_checkpoint("LlamaForCausalLM", tmp_path / "model"))  # 512 positions
    model_args = ["--model", model] if command == "generate" else [model]
    err = usage_error([*command.split(), *model_args, *flags.split()], monkeypatch, capsys)
    assert BAD_FLAGS[flags] in err


@pytest.mark.parametrize("command", ["bench throughput", "serve", "chat"])
def test_an_unknown_model_is_a_usage_error(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    err = usage_error([*command.split(), "/no/such/model"], monkeypatch, capsys)
    assert "Error: model '/no/such/model' is not a local directory" in err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--input-len", "0"], "bad length range '0'"),
        (["--output-len", "abc"], "bad length 'abc': expected N or LO:HI"),
        (["--workload", "lognormal", "--input-len", "10:20"], "lognormal takes"),
    ],
)
def test_bench_throughput_checks_its_lengths_before_the_model(
    flags: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The model does not exist: the lengths are checked first.
    err = usage_error(["bench", "throughput", "/no/such/model", *flags], monkeypatch, capsys)
    assert message in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda_is_a_clear_error() -> None:
    from pagoda.config import DeviceConfig

    with pytest.raises(ValueError, match="device 'cuda' was asked for, but torch .* sees no CUDA"):
        DeviceConfig(device="cuda")


def plugin_sections(out: str) -> dict[str, list[str]]:
    """`pagoda plugins` output as {header line: [indented lines under it]}."""
    sections: dict[str, list[str]] = {}
    header = ""
    for line in out.splitlines():
        if line.startswith("    "):
            sections[header].append(line.strip())
        else:
            header = line
            sections[header] = []
    return sections


def test_plugins_lists_each_plugin_its_distribution_and_registrations(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`pagoda plugins` shows the built-ins and the installed example plugin, each with its
    distribution, version and what it registered."""
    out = run_main(["plugins"], monkeypatch, capsys)
    assert plugin_sections(out) == {
        "llama  [pagoda-llm 0.1.0]": [
            "model architecture: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, "
            "Qwen3ForCausalLM"
        ],
        "llama_pooling  [pagoda-llm 0.1.0]": [
            "model architecture: LlamaForSequenceClassification, "
            "MistralForSequenceClassification, Qwen2ForSequenceClassification, "
            "Qwen3ForSequenceClassification"
        ],
        "bert  [pagoda-llm 0.1.0]": [
            "model architecture: BertModel, BertForSequenceClassification"
        ],
        "torch_attention  [pagoda-llm 0.1.0]": ["attention backend: torch, cpu, triton"],
        "gguf  [pagoda-llm 0.1.0]": ["quantization method: gguf"],
        "guided  [pagoda-llm 0.1.0]": [
            "guided-decoding backend: xgrammar, outlines, lm-format-enforcer"
        ],
        "tool_parsers  [pagoda-llm 0.1.0]": [
            "tool parser: hermes, llama3_json, mistral, pythonic, qwen3_coder, deepseek_v3, "
            "granite, internlm"
        ],
        "reasoning_parsers  [pagoda-llm 0.1.0]": [
            "reasoning parser: deepseek_r1, qwen3, granite, mistral"
        ],
        "example  [pagoda-plugin-example 0.1.0]": ["model architecture: ExampleForCausalLM"],
    }


def test_plugins_honours_the_allow_list(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With PAGODA_PLUGINS=llama only llama is loaded and listed."""
    monkeypatch.setenv(PLUGINS_ENV, "llama")
    out = run_main(["plugins"], monkeypatch, capsys)
    assert list(plugin_sections(out)) == ["llama  [pagoda-llm 0.1.0]"]


def test_generate_prints_prompt_and_greedy_continuation(
    tmp_path: Path,
    tokenizer_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`pagoda generate Hello --model MODEL --max-tokens 4 --temperature 0` prints the prompt
    followed by transformers' greedy continuation of it, reading the model's config once (the
    flag check's finalized config is the engine's)."""
    import pagoda.config

    reads = []
    real_load = pagoda.config.load_hf_config
    monkeypatch.setattr(pagoda.config, "load_hf_config", lambda p: reads.append(p) or real_load(p))
    path = make_tiny_checkpoint("LlamaForCausalLM", tmp_path / "model", tokenizer_dir)
    args = ["generate", "Hello", "--model", str(path), "--max-tokens", "4", "--temperature", "0"]
    out = run_main([*args, "--kv-cache-memory", str(8 << 20)], monkeypatch, capsys)
    assert reads == [str(path)]

    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    hf = transformers.LlamaForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    ids = tokenizer("Hello", return_tensors="pt").input_ids
    with torch.no_grad():
        new = hf.generate(ids, max_new_tokens=4, do_sample=False)[0, ids.shape[1] :].tolist()
    if tokenizer.eos_token_id in new:
        new = new[: new.index(tokenizer.eos_token_id)]
    continuation = tokenizer.decode(new, skip_special_tokens=True)
    assert continuation
    assert out == f"Hello{continuation}\n"
