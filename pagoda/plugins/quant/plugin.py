"""Entry point of the built-in quantization methods."""

from pagoda.hookspecs import Register, hookimpl


@hookimpl
def register_quant_methods(register: Register) -> None:
    register("gguf", "pagoda.plugins.quant.gguf:GGUFQuantMethod")
