"""Loads plugins from the ``pagoda`` entry-point group and builds registries from their hooks."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pluggy

from pagoda import hookspecs
from pagoda.hookspecs import hookimpl
from pagoda.registry import Registry

ENTRY_POINT_GROUP = "pagoda"
PLUGINS_ENV = "PAGODA_PLUGINS"

# hook name -> registry kind (the word used in error messages)
COLLECT_HOOKS = {
    "register_models": "model architecture",
    "register_quant_methods": "quantization method",
    "register_tool_parsers": "tool parser",
    "register_reasoning_parsers": "reasoning parser",
    "register_guided_backends": "guided-decoding backend",
    "register_attention_backends": "attention backend",
}


@dataclass(slots=True)
class PluginInfo:
    """One loaded plugin: its name, the distribution that ships it, and what it registered."""

    name: str
    distribution: str | None = None
    version: str | None = None
    registered: dict[str, list[str]] = field(default_factory=dict)


class _Fallbacks:
    """The core's own answers to firstresult hooks, tried after every plugin."""

    @hookimpl(trylast=True)
    def resolve_model(self, hf_config: Any, model_path: str) -> str | None:
        architectures = getattr(hf_config, "architectures", None) or []
        return architectures[0] if architectures else None

    @hookimpl(trylast=True)
    def resolve_quant_method(
        self, hf_quant_config: dict | None, requested: str | None
    ) -> str | None:
        if requested:
            return requested
        return (hf_quant_config or {}).get("quant_method")


class PluginManager:
    """pluggy's manager plus pagoda's registries.

    ``load_entrypoints=True`` loads every entry point of the ``pagoda`` group that passes the
    ``PAGODA_PLUGINS`` allow-list (comma-separated entry-point names; unset = all).
    """

    def __init__(self, load_entrypoints: bool = True, allow: list[str] | None = None) -> None:
        self.pm = pluggy.PluginManager("pagoda")
        self.pm.add_hookspecs(hookspecs)
        self.pm.register(_Fallbacks(), name="pagoda.fallbacks")
        self.plugins: dict[str, PluginInfo] = {}
        self._registries: dict[str, Registry[Any]] | None = None
        if allow is None and os.environ.get(PLUGINS_ENV):
            allow = [n.strip() for n in os.environ[PLUGINS_ENV].split(",") if n.strip()]
        if load_entrypoints:
            self._load_entrypoints(allow)

    def _load_entrypoints(self, allow: list[str] | None) -> None:
        available = list(entry_points(group=ENTRY_POINT_GROUP))
        if allow is not None:
            unknown = sorted(set(allow) - {ep.name for ep in available})
            if unknown:
                names = ", ".join(sorted(ep.name for ep in available))
                raise ValueError(
                    f"{PLUGINS_ENV} names unknown plugins {unknown}; installed: {names}"
                )
        for ep in available:
            if allow is not None and ep.name not in allow:
                continue
            if ep.name in self.plugins:
                other = self.plugins[ep.name].distribution
                raise ValueError(
                    f"plugin name {ep.name!r} is used by two distributions: {other!r} and "
                    f"{ep.dist.name if ep.dist else '?'!r}"
                )
            dist = ep.dist
            try:
                plugin = ep.load()
            except Exception as exc:
                raise ImportError(
                    f"plugin {ep.name!r} ({ep.value}, from "
                    f"{dist.name if dist else 'an unknown distribution'}) failed to load: {exc}"
                ) from exc
            self.register(
                plugin,
                ep.name,
                distribution=dist.name if dist else None,
                version=dist.version if dist else None,
            )

    def register(
        self,
        plugin: object,
        name: str,
        *,
        distribution: str | None = None,
        version: str | None = None,
    ) -> None:
        """Register an in-memory plugin (a module or object holding hookimpls)."""
        self.pm.register(plugin, name=name)
        self.plugins[name] = PluginInfo(name, distribution, version)
        self._registries = None

    def register_file(self, path: str | os.PathLike[str]) -> str:
        """Import a Python file as a plugin (``--tool-parser-plugin FILE``); returns its name."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"plugin file not found: {path}")
        name = f"file:{path.resolve()}"
        if name in self.plugins:
            return name
        digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
        spec = importlib.util.spec_from_file_location(
            f"pagoda_file_plugin_{path.stem}_{digest}", path
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        self.register(module, name, distribution=str(path))
        return name

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def registry(self, hook_name: str) -> Registry[Any]:
        """The registry built from one collect hook (built once, rebuilt after a register)."""
        if self._registries is None:
            self._registries = self._build_registries()
        return self._registries[hook_name]

    def _build_registries(self) -> dict[str, Registry[Any]]:
        for info in self.plugins.values():
            info.registered.clear()
        registries: dict[str, Registry[Any]] = {}
        for hook_name, kind in COLLECT_HOOKS.items():
            registry: Registry[Any] = Registry(kind)
            for impl in reversed(getattr(self.pm.hook, hook_name).get_hookimpls()):
                impl.function(register=self._registrar(registry, kind, impl.plugin_name))
            registries[hook_name] = registry
        return registries

    def _registrar(self, registry: Registry[Any], kind: str, provider: str) -> Any:
        """The ``register`` callable handed to one plugin's collect hook."""

        def register(name: str, value: Any, **extra: Any) -> None:
            registry.register(name, value, provider=provider, **extra)
            if provider in self.plugins:
                self.plugins[provider].registered.setdefault(kind, []).append(name)

        return register

    # Named shortcuts, so callers do not spell hook names.
    @property
    def models(self) -> Registry[Any]:
        return self.registry("register_models")

    @property
    def attention_backends(self) -> Registry[Any]:
        return self.registry("register_attention_backends")

    @property
    def quant_methods(self) -> Registry[Any]:
        return self.registry("register_quant_methods")

    @property
    def tool_parsers(self) -> Registry[Any]:
        return self.registry("register_tool_parsers")

    @property
    def reasoning_parsers(self) -> Registry[Any]:
        return self.registry("register_reasoning_parsers")

    @property
    def guided_backends(self) -> Registry[Any]:
        return self.registry("register_guided_backends")


_default: PluginManager | None = None


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager, built on first use from the installed entry points."""
    global _default
    if _default is None:
        _default = PluginManager()
    return _default


def set_plugin_manager(pm: PluginManager | None) -> None:
    """Replace (or with None, forget) the process-wide manager; tests use this."""
    global _default
    _default = pm
