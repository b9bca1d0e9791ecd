"""Entry point of the built-in tool-call parsers (registered lazily: nothing imported here)."""

from pagoda.hookspecs import Register, hookimpl

_PACKAGE = "pagoda.plugins.tool_parsers"

PARSERS = {
    "hermes": "hermes:Hermes2ProToolParser",
    "llama3_json": "llama:Llama3JsonToolParser",
    "mistral": "mistral:MistralToolParser",
    "pythonic": "pythonic:PythonicToolParser",
    "qwen3_coder": "qwen3_coder:Qwen3CoderToolParser",
    "deepseek_v3": "deepseek_v3:DeepSeekV3ToolParser",
    "granite": "granite:GraniteToolParser",
    "internlm": "internlm:Internlm2ToolParser",
}


@hookimpl
def register_tool_parsers(register: Register) -> None:
    for name, ref in PARSERS.items():
        register(name, f"{_PACKAGE}.{ref}")
