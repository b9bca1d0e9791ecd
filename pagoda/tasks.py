"""Which tasks a checkpoint supports and which one an engine runs (``--task``, or vLLM's newer
``--runner`` / ``--convert``), and the model directory's default pooling.

Supported tasks come from the architecture name:

=============================  =========================================================
``*ForCausalLM``               generate; converted: embed, classify, score, reward
``*ForSequenceClassification``  classify, score (cross-encoder), reward (raw head output)
``*Model`` (``BertModel`` ...)  embed, score (cosine similarity of embeddings)
=============================  =========================================================
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pagoda.pooling_params import POOLING_TASKS, TASKS, PoolerConfig

logger = logging.getLogger("pagoda")

RUNNERS = ("auto", "generate", "pooling")
CONVERTS = ("auto", "none", "embed", "classify", "reward")


def supported_tasks(architectures: list[str]) -> tuple[str, ...]:
    """The tasks of the first architecture, in preference order (the first is the default)."""
    arch = architectures[0] if architectures else ""
    if arch.endswith("ForSequenceClassification"):
        return ("classify", "score", "reward")
    if arch.endswith("ForCausalLM") or arch.endswith("ForConditionalGeneration"):
        return ("generate", "embed", "classify", "score", "reward")
    if arch.endswith("Model") or arch.endswith("ForMaskedLM"):
        return ("embed", "score")
    return ("generate",)


def format_tasks(tasks: tuple[str, ...]) -> str:
    """A set's repr in a fixed order: ``{'generate', 'embed'}``."""
    return "{" + ", ".join(repr(t) for t in tasks) + "}"


def resolve_task(task: str, runner: str, convert: str, supported: tuple[str, ...]) -> str:
    """The one task the engine runs. ``--task`` wins; else ``--convert`` (which implies the
    pooling runner); else ``--runner``; else the architecture's default."""
    if task not in ("auto", *TASKS):
        raise ValueError(f"task must be auto or one of {', '.join(TASKS)}, got {task!r}")
    if runner not in RUNNERS:
        raise ValueError(f"runner must be one of {', '.join(RUNNERS)}, got {runner!r}")
    if convert not in CONVERTS:
        raise ValueError(f"convert must be one of {', '.join(CONVERTS)}, got {convert!r}")
    if task == "auto" and convert not in ("auto", "none"):
        if runner == "generate":
            raise ValueError(f"--convert {convert} needs --runner pooling")
        task = convert
    if task == "auto" and runner == "generate":
        task = "generate"
    if task == "auto" and runner == "pooling":
        task = next((t for t in supported if t in POOLING_TASKS), "embed")
    if task == "auto":
        task = supported[0]
        if len(supported) > 1:
            logger.info(
                "This model supports multiple tasks: %s. Defaulting to '%s'.",
                format_tasks(supported),
                task,
            )
    if task not in supported:
        raise ValueError(
            f"this model ({'/'.join(supported)}) does not support the {task!r} task; "
            f"supported tasks: {', '.join(supported)}"
        )
    return task


def sentence_transformers_pooling(model_path: str) -> PoolerConfig | None:
    """The pooling a Sentence-Transformers directory declares (modules.json naming a Pooling
    module, its config, and whether a Normalize module follows), or None."""
    root = Path(model_path)
    modules_file = root / "modules.json"
    if not root.is_dir() or not modules_file.is_file():
        return None
    try:
        modules: list[dict[str, Any]] = json.loads(modules_file.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    pooling_type = None
    normalize = False
    for module in modules:
        kind = str(module.get("type", ""))
        if kind.endswith(".Pooling"):
            conf_file = root / str(module.get("path", "")) / "config.json"
            conf = json.loads(conf_file.read_text()) if conf_file.is_file() else {}
            if conf.get("pooling_mode_cls_token"):
                pooling_type = "CLS"
            elif conf.get("pooling_mode_lasttoken"):
                pooling_type = "LAST"
            elif conf.get("pooling_mode_mean_tokens", True):
                pooling_type = "MEAN"
        elif kind.endswith(".Normalize"):
            normalize = True
    return PoolerConfig(pooling_type=pooling_type, normalize=normalize)


def sentence_transformers_max_len(model_path: str) -> int | None:
    """``max_seq_length`` of a Sentence-Transformers directory's sentence_bert_config.json."""
    conf = Path(model_path) / "sentence_bert_config.json"
    if not conf.is_file():
        return None
    try:
        value = json.loads(conf.read_text()).get("max_seq_length")
    except (OSError, json.JSONDecodeError):
        return None
    return int(value) if value else None


def is_matryoshka(hf_config: Any) -> bool:
    """Whether the model's embeddings may be cut to fewer ``dimensions``."""
    return bool(
        getattr(hf_config, "is_matryoshka", False)
        or getattr(hf_config, "matryoshka_dimensions", None)
    )
