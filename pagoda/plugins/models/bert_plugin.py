"""Entry point of the built-in BERT models (registered lazily: no torch import here)."""

from pagoda.hookspecs import Register, hookimpl

_MODULE = "pagoda.plugins.models.bert"


@hookimpl
def register_models(register: Register) -> None:
    register("BertModel", f"{_MODULE}:BertModel", tasks=("embed", "score"))
    register(
        "BertForSequenceClassification",
        f"{_MODULE}:BertForSequenceClassification",
        tasks=("classify", "score", "reward"),
    )
