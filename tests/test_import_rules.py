"""DESIGN.md's import rules, checked on every module's import statements parsed with ast
(module level, inside functions, and under ``if TYPE_CHECKING:`` alike):

- ``kernels`` imports nothing from pagoda;
- ``plugins.*`` import only ``interfaces``, ``layers``, ``kernels``, ``hookspecs``, ``config``,
  the top-level ``pagoda.hookimpl`` (and their own plugin package), never ``core`` or ``server``;
- ``core`` never imports ``plugins`` or ``server``;
- ``server`` never imports ``plugins``, and of ``core`` only ``core.async_engine``.

The rules that say "never" are also checked transitively (as import-linter's forbidden
contracts are): a plugin may not reach ``core`` through a module it is allowed to import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pagoda

ROOT = Path(pagoda.__file__).parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports_of(name: str, source: str) -> set[str]:
    """Every pagoda name a module imports, wherever the import statement is. For ``from X
    import y`` the result is ``X.y`` when that is a module, else ``X`` (or ``pagoda.y`` for
    names of the top-level package, e.g. ``pagoda.hookimpl``)."""
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in MODULES or target == "pagoda" else target)
    return {n for n in found if n == "pagoda" or n.startswith("pagoda.")}


GRAPH: dict[str, set[str]] = {n: imports_of(n, p.read_text()) for n, p in MODULES.items()}


def within(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def reachable(start: str) -> dict[str, str]:
    """Every pagoda module ``start`` imports directly or indirectly, mapped to the module
    that imports it (to print the chain)."""
    seen: dict[str, str] = {}
    todo = [start]
    while todo:
        current = todo.pop()
        for target in GRAPH.get(current, ()):
            if target not in seen and target != start:
                seen[target] = current
                todo.append(target)
    return seen


def chain(start: str, end: str, parents: dict[str, str]) -> str:
    path = [end]
    while path[-1] != start:
        path.append(parents[path[-1]])
    return " -> ".join(reversed(path))


def modules_in(package: str) -> list[str]:
    return [n for n in MODULES if within(n, package)]


PLUGIN_ALLOWED = (
    "pagoda.interfaces",
    "pagoda.layers",
    "pagoda.kernels",
    "pagoda.hookspecs",
    "pagoda.config",
    "pagoda.hookimpl",
    "pagoda.plugins",
)


def test_the_checker_sees_every_kind_of_import() -> None:
    """The parser finds imports inside functions and TYPE_CHECKING blocks, resolves relative
    imports, and tells a submodule from a name imported out of a package."""
    MODULES.setdefault("pagoda.plugins.fake.mod", ROOT / "plugins" / "fake" / "mod.py")
    try:
        found = imports_of(
            "pagoda.plugins.fake.mod",
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from pagoda.core.engine import LLMEngine\n"
            "def f():\n    import pagoda.server\n"
            "from ...layers import linear\n"
            "from ... import hookimpl\n"
            "from pagoda.interfaces import ModelContext\n",
        )
    finally:
        del MODULES["pagoda.plugins.fake.mod"]
    assert found == {
        "pagoda.core.engine",
        "pagoda.server",
        "pagoda.layers.linear",
        "pagoda.hookimpl",
        "pagoda.interfaces",
    }


def test_there_are_modules_to_check() -> None:
    assert modules_in("pagoda.kernels") and modules_in("pagoda.plugins")
    assert modules_in("pagoda.core")


@pytest.mark.parametrize("name", modules_in("pagoda.kernels"))
def test_kernels_import_nothing_of_pagoda(name: str) -> None:
    """Kernels stand alone beside their torch references."""
    outside = {n for n in GRAPH[name] if not within(n, "pagoda.kernels")}
    assert not outside, f"{name} imports {sorted(outside)}"


@pytest.mark.parametrize("name", modules_in("pagoda.plugins"))
def test_plugins_import_only_the_public_api(name: str) -> None:
    """Built-in plugins are written like third-party ones: they import only interfaces,
    layers, kernels, hookspecs/hookimpl and config (and modules of their own plugin package)."""
    bad = {n for n in GRAPH[name] if not within(n, *PLUGIN_ALLOWED)}
    assert not bad, f"{name} imports {sorted(bad)}"


@pytest.mark.parametrize("name", modules_in("pagoda.plugins"))
def test_plugins_never_reach_core_or_server(name: str) -> None:
    """Not even through a module they may import."""
    parents = reachable(name)
    bad = [chain(name, n, parents) for n in parents if within(n, "pagoda.core", "pagoda.server")]
    assert not bad, bad


@pytest.mark.parametrize("name", modules_in("pagoda.core"))
def test_core_never_imports_plugins_or_server(name: str) -> None:
    """The core reaches plugins only through registries built from hooks."""
    parents = reachable(name)
    bad = [chain(name, n, parents) for n in parents if within(n, "pagoda.plugins", "pagoda.server")]
    assert not bad, bad


@pytest.mark.parametrize("name", modules_in("pagoda.server") or ["(no server yet)"])
def test_server_never_imports_plugins_and_reaches_core_only_through_async_engine(
    name: str,
) -> None:
    """The server talks to the engine only through the async engine's queues."""
    if name not in GRAPH:
        pytest.skip("pagoda.server has no modules yet")
    bad = {
        n
        for n in GRAPH[name]
        if within(n, "pagoda.plugins")
        or (within(n, "pagoda.core") and not within(n, "pagoda.core.async_engine"))
    }
    assert not bad, f"{name} imports {sorted(bad)}"
    parents = reachable(name)
    indirect = [chain(name, n, parents) for n in parents if within(n, "pagoda.plugins")]
    assert not indirect, indirect
