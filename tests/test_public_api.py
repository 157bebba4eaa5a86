"""The package uses only the public API of Twisted, treq and lxml: no name with a leading underscore."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "atomrelay"
LIBRARIES = ("twisted", "treq", "lxml", "zope")
ALLOWED = {"lxml.etree._Element"}
"""lxml's element class: lxml documents it in its API reference and has no public alias for it (lxml-stubs types
every element with it); ``etree.iselement`` is the runtime check."""


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _library(module: str) -> bool:
    return module.split(".")[0] in LIBRARIES


def _library_attributes(tree: ast.Module) -> dict[str, str]:
    """Local name -> dotted library name, for every name a module imports from the libraries."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _library(alias.name) and alias.asname:
                    names[alias.asname] = alias.name
                elif _library(alias.name):
                    top = alias.name.split(".")[0]
                    names[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and _library(node.module):
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _library_members(cls: type) -> set[str]:
    """The private names the library classes in ``cls``'s MRO define or use on ``self``."""
    found: set[str] = set()
    for base in cls.__mro__:
        if not _library(base.__module__):
            continue
        found.update(name for name in vars(base) if _private(name))
        found.update(name for name in getattr(base, "__annotations__", {}) if _private(name))
        try:
            source = inspect.getsource(base)
        except (OSError, TypeError):
            continue
        found.update(re.findall(r"\bself\.(_\w+)", source))
    return {name for name in found if _private(name)}


def private_uses(path: Path) -> list[str]:
    """Every use of a library's private name in the module at ``path``, as ``line: what``."""
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    imported = _library_attributes(tree)
    found: list[str] = []

    def report(node: ast.AST, what: str) -> None:
        if what not in ALLOWED:
            found.append(f"{path.relative_to(PACKAGE.parent)}:{getattr(node, 'lineno', 0)}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _library(alias.name) and any(_private(part) for part in alias.name.split(".")):
                    report(node, alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module and _library(node.module):
            for alias in node.names:
                dotted = f"{node.module}.{alias.name}"
                if any(_private(part) for part in dotted.split(".")):
                    report(node, dotted)
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            if isinstance(node.value, ast.Name) and node.value.id in imported:
                report(node, f"{imported[node.value.id]}.{node.attr}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in ("getattr", "hasattr", "setattr", "delattr") and len(node.args) >= 2:
                name = node.args[1]
                if isinstance(name, ast.Constant) and isinstance(name.value, str) and _private(name.value):
                    report(node, f"{node.func.id}(..., {name.value!r})")

    module = importlib.import_module(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        cls = getattr(module, node.name, None)
        if not isinstance(cls, type):
            continue
        inherited = _library_members(cls)
        for inner in ast.walk(node):
            if isinstance(inner, ast.Attribute) and inner.attr in inherited:
                report(inner, f"{cls.__name__} uses its library base's {inner.attr}")
    return found


def test_no_private_names_of_twisted_treq_or_lxml() -> None:
    """No module of the package imports, reads, calls or overrides a Twisted, treq or lxml name with a leading
    underscore (a private module, function, class, attribute or method)."""
    found = [use for path in sorted(PACKAGE.rglob("*.py")) for use in private_uses(path)]
    assert found == []
