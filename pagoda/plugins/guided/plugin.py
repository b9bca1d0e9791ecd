"""Entry point of the built-in guided-decoding backends (registered lazily: no torch and no
backend library is imported here)."""

from pagoda.hookspecs import Register, hookimpl

_PACKAGE = "pagoda.plugins.guided"


@hookimpl
def register_guided_backends(register: Register) -> None:
    register("xgrammar", f"{_PACKAGE}.xgrammar_backend:XGrammarBackend")
    register("outlines", f"{_PACKAGE}.outlines_backend:OutlinesBackend")
    register("lm-format-enforcer", f"{_PACKAGE}.lmfe_backend:LMFormatEnforcerBackend")
