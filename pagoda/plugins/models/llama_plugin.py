"""Entry point of the built-in Llama-family models (registered lazily: no torch import here)."""

from pagoda.hookspecs import Register, hookimpl

_MODULE = "pagoda.plugins.models.llama"


@hookimpl
def register_models(register: Register) -> None:
    for arch in ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"):
        register(arch, f"{_MODULE}:{arch}", tasks=("generate",))
