"""The store package's layout: aggregate modules over one public core, no private reach-ins, no cycle.

These read the source (ast), so they hold for every module of the package,
including ones added later.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import controlplane.store

STORE = Path(controlplane.store.__file__).parent
MODULES = sorted(STORE.glob("*.py"))


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _store_imports(path: Path) -> list[ast.ImportFrom]:
    return [
        node
        for node in ast.walk(_tree(path))
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("controlplane.store")
    ]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_store_module_imports_another_modules_private_names(path: Path) -> None:
    private = [
        f"{node.module}.{alias.name}"
        for node in _store_imports(path)
        for alias in node.names
        if alias.name.startswith("_")
    ]
    assert private == [], f"{path.name} imports private names: {private}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_only_the_package_imports_the_facade(path: Path) -> None:
    # the aggregate modules sit below the Store facade: importing it back is the old cycle
    if path.name == "__init__.py":
        return
    facade = [node.module for node in _store_imports(path) if node.module == "controlplane.store.repository"]
    guarded = [
        node
        for node in ast.walk(_tree(path))
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
    ]
    assert facade == [], f"{path.name} imports the Store facade it sits below"
    assert guarded == [], f"{path.name} hides an import cycle behind TYPE_CHECKING"


def test_the_task_transition_event_is_written_in_one_place() -> None:
    writers = sorted(
        path.name
        for path in MODULES
        for node in ast.walk(_tree(path))
        if isinstance(node, ast.Constant) and node.value == "task.transition"
    )
    assert writers == ["core.py"]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_store_modules_stay_small(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= 600, f"{path.name} has {lines} lines"
    long = [
        (node.name, node.end_lineno - node.lineno + 1)
        for node in ast.walk(_tree(path))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > 100
    ]
    assert long == [], f"{path.name} has functions over 100 lines: {long}"
