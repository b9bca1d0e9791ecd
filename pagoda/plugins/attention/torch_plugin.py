"""Entry point of the built-in torch attention backend (the CPU path)."""

from pagoda.hookspecs import Register, hookimpl


@hookimpl
def register_attention_backends(register: Register) -> None:
    register(
        "torch",
        "pagoda.plugins.attention.torch_backend:TorchAttentionBackend",
        devices=("cpu", "cuda"),
        priority=0,
    )
