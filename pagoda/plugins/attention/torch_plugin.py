"""Entry point of the built-in CPU attention backends."""

from pagoda.hookspecs import Register, hookimpl

_MODULE = "pagoda.plugins.attention.torch_backend"


@hookimpl
def register_attention_backends(register: Register) -> None:
    register("torch", f"{_MODULE}:TorchAttentionBackend", devices=("cpu", "cuda"), priority=0)
    register("cpu", f"{_MODULE}:CPUAttentionBackend", devices=("cpu",), priority=10)
    register(
        "triton",
        "pagoda.plugins.attention.triton_backend:TritonAttentionBackend",
        devices=("cuda",),
        priority=20,
    )  # noqa: E501
