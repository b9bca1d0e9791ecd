"""Entry point of the Llama family's sequence-classification models (lazy: no torch here)."""

from pagoda.hookspecs import Register, hookimpl

_MODULE = "pagoda.plugins.models.llama_pooling"
_ARCHS = (
    "LlamaForSequenceClassification",
    "MistralForSequenceClassification",
    "Qwen2ForSequenceClassification",
    "Qwen3ForSequenceClassification",
)


@hookimpl
def register_models(register: Register) -> None:
    for arch in _ARCHS:
        register(arch, f"{_MODULE}:{arch}", tasks=("classify", "score", "reward"))
