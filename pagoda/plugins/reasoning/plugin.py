"""Entry point of the built-in reasoning parsers (registered lazily: nothing imported here)."""

from pagoda.hookspecs import Register, hookimpl

_MODULE = "pagoda.plugins.reasoning.parsers"

PARSERS = {
    "deepseek_r1": "DeepSeekR1ReasoningParser",
    "qwen3": "Qwen3ReasoningParser",
    "granite": "GraniteReasoningParser",
    "mistral": "MistralReasoningParser",
}


@hookimpl
def register_reasoning_parsers(register: Register) -> None:
    for name, cls in PARSERS.items():
        register(name, f"{_MODULE}:{cls}")
