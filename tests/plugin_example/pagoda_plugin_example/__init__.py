"""Entry module of the example plugin: registers ExampleForCausalLM lazily (no torch here)."""

from pagoda.hookspecs import Register, hookimpl

MODEL_REF = "pagoda_plugin_example.model:ExampleForCausalLM"


@hookimpl
def register_models(register: Register) -> None:
    register("ExampleForCausalLM", MODEL_REF, tasks=("generate",))
