"""Entry point of the built-in guided-decoding backends (registered lazily: no torch and no
backend library is imported here)."""

from pagoda.hookspecs import Register, hookimpl

_PACKAGE = "pagoda.plugins.guided"


@hookimpl
def register_guided_backends(register: Register) -> None:
    # "auto" tries backends by descending priority: xgrammar first, then the fallbacks.
    register("xgrammar", f"{_PACKAGE}.xgrammar_backend:XGrammarBackend", priority=30)
    register("outlines", f"{_PACKAGE}.outlines_backend:OutlinesBackend", priority=20)
    register("lm-format-enforcer", f"{_PACKAGE}.lmfe_backend:LMFormatEnforcerBackend", priority=10)
