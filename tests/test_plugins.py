"""The plugin system: entry-point discovery of a really installed third-party plugin
(tests/plugin_example), the PAGODA_PLUGINS allow-list, and the hooks of in-memory plugins
registered on a fresh manager per test."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import click
import pytest
import torch
import transformers
from tiny_models import make_tiny_checkpoint

import pagoda.plugin_manager as plugin_manager
from pagoda import LLM, SamplingParams, hookimpl
from pagoda.plugin_manager import PluginManager, set_plugin_manager
from pagoda.registry import RegistryError

BUILTIN_ARCHS = ["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"]
KV_BYTES = 8 << 20
PROMPTS = ["Hello", "The capital of France is", "Once upon a time, in a small village by the sea"]
NEW_TOKENS = 12


@pytest.fixture(autouse=True)
def fresh_default_manager(monkeypatch: pytest.MonkeyPatch):
    """Every test starts and ends with no process-wide manager and no allow-list, so a
    manager built in one test never leaks into another."""
    monkeypatch.delenv(plugin_manager.PLUGINS_ENV, raising=False)
    set_plugin_manager(None)
    yield
    set_plugin_manager(None)


@pytest.fixture(scope="module")
def example_checkpoint(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Path:
    """A tiny random Llama checkpoint whose config names the plugin's architecture."""
    path = make_tiny_checkpoint(
        "LlamaForCausalLM", tmp_path_factory.mktemp("example") / "model", tokenizer_dir
    )
    config_file = path / "config.json"
    config = json.loads(config_file.read_text())
    config["architectures"] = ["ExampleForCausalLM"]
    config_file.write_text(json.dumps(config))
    return path


def small_llm(path: Path) -> LLM:
    return LLM(str(path), dtype="float32", kv_cache_memory=KV_BYTES, max_num_seqs=4)


# --- the installed example plugin ----------------------------------------------------------


def test_installed_example_plugin_is_discovered_with_its_distribution() -> None:
    """The entry point `example` of the separately installed distribution is loaded, listed
    with its distribution and version, and its architecture lands in the model registry
    under its own name as provider."""
    pm = PluginManager()
    info = pm.plugins["example"]
    assert info.distribution == "pagoda-plugin-example"
    assert info.version == importlib.metadata.version("pagoda-plugin-example")
    entry = pm.models.entry("ExampleForCausalLM")
    assert entry.provider == "example"
    assert entry.extra == {"tasks": ("generate",)}
    assert info.registered == {"model architecture": ["ExampleForCausalLM"]}
    # The built-ins come through the same entry-point group.
    assert pm.plugins["llama"].distribution == "pagoda-llm"
    assert set(BUILTIN_ARCHS) <= set(pm.models.names())


def test_example_entry_module_registers_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading the plugin imports neither torch (at the entry module's top level) nor the
    model module; the model is imported on the first registry lookup."""
    import pagoda_plugin_example

    tree = ast.parse(Path(pagoda_plugin_example.__file__).read_text())
    top_level = {
        alias.name.split(".")[0]
        for node in tree.body
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {node.module.split(".")[0] for node in tree.body if isinstance(node, ast.ImportFrom)}
    assert "torch" not in top_level

    # Forget both modules, so the entry point really imports the entry module again.
    monkeypatch.delitem(sys.modules, "pagoda_plugin_example", raising=False)
    monkeypatch.delitem(sys.modules, "pagoda_plugin_example.model", raising=False)
    pm = PluginManager()
    assert isinstance(pm.models.entry("ExampleForCausalLM").value, str)
    assert "pagoda_plugin_example.model" not in sys.modules
    cls = pm.models.get("ExampleForCausalLM")
    assert cls.__module__ == "pagoda_plugin_example.model"
    assert "pagoda_plugin_example.model" in sys.modules


def test_example_plugin_generates_like_transformers(example_checkpoint: Path) -> None:
    """LLM(...) on a checkpoint naming ExampleForCausalLM builds the plugin's model and
    greedily decodes the same tokens as transformers' LlamaForCausalLM on the same weights."""
    llm = small_llm(example_checkpoint)
    model = llm.llm_engine.executor.runner.model
    assert type(model).__module__ == "pagoda_plugin_example.model"
    params = SamplingParams(temperature=0, max_tokens=NEW_TOKENS, ignore_eos=True)
    outputs = llm.generate(PROMPTS, params, use_tqdm=False)

    hf = transformers.LlamaForCausalLM.from_pretrained(example_checkpoint, dtype=torch.float32)
    hf.eval()
    for prompt, output in zip(PROMPTS, outputs, strict=True):
        ids = output.prompt_token_ids
        got = list(output.outputs[0].token_ids)
        assert len(got) == NEW_TOKENS
        # Teacher forcing: each pagoda token is transformers' argmax given the same prefix.
        with torch.no_grad():
            logits = hf(torch.tensor([ids + got[:-1]])).logits[0, len(ids) - 1 :]
        assert got == logits.argmax(dim=-1).tolist(), f"greedy tokens differ for {prompt!r}"
        assert output.outputs[0].text  # detokenized too


def test_plugins_env_excludes_the_example_plugin(
    example_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With PAGODA_PLUGINS not naming `example`, the plugin is not loaded, and its checkpoint
    fails with an error naming ExampleForCausalLM and listing the supported architectures."""
    monkeypatch.setenv("PAGODA_PLUGINS", "llama, torch_attention")
    set_plugin_manager(None)
    assert set(PluginManager().plugins) == {"llama", "torch_attention"}
    with pytest.raises(ValueError) as excinfo:
        small_llm(example_checkpoint)
    message = str(excinfo.value)
    assert "ExampleForCausalLM" in message
    supported = message.split("supported architectures:")[1]
    assert [s.strip() for s in supported.split(",")] == BUILTIN_ARCHS

    # Naming it lets it back in.
    monkeypatch.setenv("PAGODA_PLUGINS", "llama,torch_attention,example")
    assert "ExampleForCausalLM" in PluginManager().models


# --- in-memory plugins on a fresh manager ----------------------------------------------------


def model_plugin(*names: str) -> object:
    """An in-memory plugin registering ``names`` as model architectures."""

    class Plugin:
        @hookimpl
        def register_models(self, register) -> None:
            for name in names:
                register(name, "collections:OrderedDict")

    return Plugin()


def test_duplicate_name_raises_naming_both_plugins() -> None:
    """Two plugins registering one architecture is an error naming both, never a rename or
    a silent overwrite."""
    pm = PluginManager(load_entrypoints=False)
    pm.register(model_plugin("TwinForCausalLM"), "first")
    pm.register(model_plugin("TwinForCausalLM"), "second")
    with pytest.raises(RegistryError) as excinfo:
        pm.models  # noqa: B018 - building the registry is what raises
    message = str(excinfo.value)
    assert "TwinForCausalLM" in message
    assert "'first'" in message and "'second'" in message


def test_third_party_cannot_silently_replace_a_builtin_model() -> None:
    """An in-memory plugin registering LlamaForCausalLM collides loudly with `llama`."""
    pm = PluginManager()
    pm.register(model_plugin("LlamaForCausalLM"), "impostor")
    with pytest.raises(RegistryError, match=r"'llama'.*'impostor'|'impostor'.*'llama'"):
        pm.models  # noqa: B018


def test_unknown_name_lists_the_known_names() -> None:
    """Looking up a name nobody registered fails and lists what exists."""
    pm = PluginManager(load_entrypoints=False)
    pm.register(model_plugin("AForCausalLM", "BForCausalLM"), "mine")
    with pytest.raises(RegistryError) as excinfo:
        pm.models.get("CForCausalLM")
    assert "'CForCausalLM'" in str(excinfo.value)
    assert "known: AForCausalLM, BForCausalLM" in str(excinfo.value)


def test_registering_a_plugin_rebuilds_the_registries() -> None:
    """A plugin registered after a registry was built is seen by the next lookup."""
    pm = PluginManager(load_entrypoints=False)
    pm.register(model_plugin("AForCausalLM"), "a")
    assert pm.models.names() == ["AForCausalLM"]
    pm.register(model_plugin("BForCausalLM"), "b")
    assert pm.models.names() == ["AForCausalLM", "BForCausalLM"]
    assert pm.plugins["b"].registered == {"model architecture": ["BForCausalLM"]}


class Redirect:
    """Serves every checkpoint claiming ``source`` with the architecture ``target``."""

    def __init__(self, source: str, target: str) -> None:
        self.source, self.target = source, target

    @hookimpl
    def resolve_model(self, hf_config, model_path: str) -> str | None:
        return self.target if self.source in hf_config.architectures else None


def test_resolve_model_is_firstresult_over_the_architectures_fallback() -> None:
    """Without plugins the checkpoint's first architecture wins; a plugin's non-None answer
    replaces it, and a plugin answering None passes to the fallback."""
    pm = PluginManager(load_entrypoints=False)
    config = SimpleNamespace(architectures=["FooForCausalLM"])
    assert pm.hook.resolve_model(hf_config=config, model_path="p") == "FooForCausalLM"
    pm.register(Redirect("BarForCausalLM", "LlamaForCausalLM"), "bar")
    assert pm.hook.resolve_model(hf_config=config, model_path="p") == "FooForCausalLM"
    pm.register(Redirect("FooForCausalLM", "LlamaForCausalLM"), "foo")
    assert pm.hook.resolve_model(hf_config=config, model_path="p") == "LlamaForCausalLM"


def test_resolve_model_redirects_what_the_engine_builds(example_checkpoint: Path) -> None:
    """The engine builds the class the resolve_model hook names: the example checkpoint,
    redirected to LlamaForCausalLM, runs on the built-in Llama even without `example`."""
    pm = PluginManager(allow=["llama", "torch_attention"])
    pm.register(Redirect("ExampleForCausalLM", "LlamaForCausalLM"), "redirect")
    set_plugin_manager(pm)
    llm = small_llm(example_checkpoint)
    model = llm.llm_engine.executor.runner.model
    assert type(model).__module__ == "pagoda.plugins.models.llama"
    assert type(model).__name__ == "LlamaForCausalLM"


class Recorder:
    def __init__(self) -> None:
        self.configs: list[object] = []

    @hookimpl
    def configure(self, config) -> None:
        self.configs.append(config)


def test_configure_is_historic() -> None:
    """A plugin registered after configure was called still receives the call, once."""
    pm = PluginManager(load_entrypoints=False)
    config = object()
    pm.hook.configure.call_historic(kwargs={"config": config})
    recorder = Recorder()
    pm.register(recorder, "late")
    assert recorder.configs == [config]


def test_engine_calls_configure_with_the_final_config(example_checkpoint: Path) -> None:
    """Building an engine calls configure with the finalized config (model path resolved,
    HF config read) before the model is built; a plugin may veto the config by raising."""

    class Veto(Exception):
        pass

    class Validator:
        def __init__(self) -> None:
            self.seen = None

        @hookimpl
        def configure(self, config) -> None:
            self.seen = config
            raise Veto

    validator = Validator()
    pm = PluginManager()
    pm.register(validator, "validator")
    set_plugin_manager(pm)
    with pytest.raises(Veto):
        small_llm(example_checkpoint)
    assert validator.seen.model.model_path == str(example_checkpoint)
    assert validator.seen.model.hf_config.architectures == ["ExampleForCausalLM"]


PARSER_PLUGIN = """
from pagoda.hookspecs import hookimpl


class ShoutParser:
    pass


@hookimpl
def register_tool_parsers(register):
    register("shout", ShoutParser)
"""


def test_register_file_loads_a_plugin_from_a_python_file(tmp_path: Path) -> None:
    """register_file (--tool-parser-plugin FILE) imports the file as a plugin whose names
    then work like built-in ones; registering the same file again is a no-op."""
    path = tmp_path / "shout_parser.py"
    path.write_text(PARSER_PLUGIN)
    pm = PluginManager(load_entrypoints=False)
    name = pm.register_file(path)
    parser = pm.tool_parsers.get("shout")
    assert parser.__name__ == "ShoutParser"
    assert pm.tool_parsers.entry("shout").provider == name
    assert pm.plugins[name].registered == {"tool parser": ["shout"]}
    assert pm.register_file(path) == name
    assert pm.tool_parsers.names() == ["shout"]
    with pytest.raises(FileNotFoundError):
        pm.register_file(tmp_path / "missing.py")


def test_register_commands_adds_a_click_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`pagoda` (pagoda.cli:main) runs commands that plugins add through register_commands."""
    import pagoda.cli

    class Commands:
        @hookimpl
        def register_commands(self, cli: click.Group) -> None:
            @cli.command()
            @click.argument("name")
            def greet(name: str) -> None:
                """Say hello."""
                click.echo(f"hello, {name}")

    pm = PluginManager(load_entrypoints=False)
    pm.register(Commands(), "greeter")
    set_plugin_manager(pm)
    # main() adds commands to the module's click group; restore it afterwards.
    monkeypatch.setattr(pagoda.cli.cli, "commands", dict(pagoda.cli.cli.commands))
    monkeypatch.setattr(sys, "argv", ["pagoda", "greet", "plugins"])
    with pytest.raises(SystemExit) as excinfo:
        pagoda.cli.main()
    assert excinfo.value.code == 0
    assert capsys.readouterr().out == "hello, plugins\n"
