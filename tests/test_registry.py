"""Registry: one generic name -> class map with lazy "module:Class" references and loud
conflicts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pagoda.registry import Registry, RegistryError, load_reference


@pytest.fixture
def lazy_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh importable module, not yet imported, that counts its own imports."""
    name = "pagoda_test_lazy_module"
    (tmp_path / f"{name}.py").write_text(
        "import builtins\n"
        "builtins.pagoda_lazy_imports = getattr(builtins, 'pagoda_lazy_imports', 0) + 1\n"
        "class Thing:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    import builtins

    monkeypatch.setattr(builtins, "pagoda_lazy_imports", 0, raising=False)
    yield name
    sys.modules.pop(name, None)


def test_lazy_reference_is_imported_on_first_get_only(lazy_module: str) -> None:
    """Registering "module:Class" imports nothing; the first get imports the module and
    returns the class; later gets reuse it without importing again."""
    import builtins

    registry: Registry[type] = Registry("thing")
    registry.register("thing", f"{lazy_module}:Thing", provider="p")
    assert lazy_module not in sys.modules
    assert "thing" in registry and registry.names() == ["thing"]

    cls = registry.get("thing")
    assert cls.__name__ == "Thing" and cls.__module__ == lazy_module
    assert builtins.pagoda_lazy_imports == 1
    assert registry.entry("thing").value is cls
    sys.modules.pop(lazy_module)  # a second import would now re-run the module
    assert registry.get("thing") is cls
    assert builtins.pagoda_lazy_imports == 1


def test_class_values_are_returned_as_is() -> None:
    """A class registered directly comes back unchanged, with its extra fields kept."""

    class Backend:
        pass

    registry: Registry[type] = Registry("attention backend")
    registry.register("b", Backend, provider="p", devices=("cpu",), priority=3)
    assert registry.get("b") is Backend
    entry = registry.entry("b")
    assert (entry.provider, entry.extra) == ("p", {"devices": ("cpu",), "priority": 3})


def test_duplicate_name_names_both_providers_and_keeps_the_first() -> None:
    """Registering a name twice raises, naming the kind, the name and both providers;
    the first registration stays (no overwrite, no renaming)."""
    registry: Registry[object] = Registry("tool parser")
    registry.register("hermes", "a:First", provider="plugin-one")
    with pytest.raises(RegistryError) as excinfo:
        registry.register("hermes", "b:Second", provider="plugin-two")
    assert str(excinfo.value) == (
        "tool parser 'hermes' is registered twice: by 'plugin-one' and by 'plugin-two'"
    )
    assert registry.names() == ["hermes"]
    assert registry.entry("hermes").value == "a:First"
    assert registry.entry("hermes").provider == "plugin-one"


def test_unknown_name_lists_the_known_names_sorted() -> None:
    """Looking up an unknown name raises and lists every registered name."""
    registry: Registry[object] = Registry("reasoning parser")
    for name in ("qwen3", "deepseek_r1"):
        registry.register(name, object)
    with pytest.raises(RegistryError) as excinfo:
        registry.get("nope")
    assert str(excinfo.value) == "unknown reasoning parser 'nope'; known: deepseek_r1, qwen3"
    assert "nope" not in registry


def test_unknown_name_in_an_empty_registry_says_none() -> None:
    with pytest.raises(RegistryError, match=r"unknown quantization method 'fp8'; known: \(none\)"):
        Registry("quantization method").get("fp8")


def test_registry_error_is_a_value_error() -> None:
    """Callers (CLI option validation) can catch RegistryError as ValueError."""
    assert issubclass(RegistryError, ValueError)


def test_bad_reference_without_colon_is_rejected() -> None:
    """A lazy reference must be "module:Attr"; anything else is a RegistryError saying so."""
    registry: Registry[object] = Registry("model architecture")
    registry.register("Bad", "collections.OrderedDict", provider="p")
    with pytest.raises(RegistryError, match=r"'collections.OrderedDict' must look like"):
        registry.get("Bad")
    with pytest.raises(RegistryError, match="must look like 'module:Attr'"):
        load_reference("collections")


def test_reference_to_missing_module_or_attribute_fails_loudly() -> None:
    """A reference naming a module or attribute that does not exist raises on lookup."""
    with pytest.raises(ModuleNotFoundError, match="pagoda_no_such_module"):
        load_reference("pagoda_no_such_module:Thing")
    with pytest.raises(AttributeError, match="NoSuchClass"):
        load_reference("collections:NoSuchClass")
    assert load_reference("collections:OrderedDict").__name__ == "OrderedDict"
