"""Imports point one way: no module of `model/` or `pipeline/` imports, directly or through others, a module that
imports it back, and `model/` imports nothing of `pipeline/`.

The graph is read from the source (AST), so an import inside a function counts as much as one at the top: a lazy
import hides a cycle from Python's import machinery, not from the design. Imports under `if TYPE_CHECKING:` are left
out (they never run). A `from PACKAGE import NAME` counts as importing the module PACKAGE.NAME where there is one.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("model", "pipeline")


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(node: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    """Every dotted name the statements under `node` import (the candidates of each), TYPE_CHECKING blocks aside."""
    if isinstance(node, ast.If) and _is_type_checking(node.test):
        for child in node.orelse:
            yield from _imported(child, module, is_package)
        return
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
            source = ".".join([*base, *([node.module] if node.module else [])])
        else:
            source = node.module or ""
        for alias in node.names:
            yield f"{source}.{alias.name}"
        yield source
    for child in ast.iter_child_nodes(node):
        yield from _imported(child, module, is_package)


def _graph() -> dict[str, set[str]]:
    modules = _modules()

    def resolve(name: str) -> str | None:
        while name:
            if name in modules:
                return name
            name = name.rpartition(".")[0]
        return None

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        targets = {resolve(name) for name in _imported(tree, module, path.name == "__init__.py")}
        graph[module] = {target for target in targets if target is not None and target != module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted: every import cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_of_model_or_pipeline_is_in_an_import_cycle() -> None:
    assert _cycles(_graph()) == []


def test_the_sub_packages_of_model_depend_one_way() -> None:
    """`model`'s sub-packages (formats, inference, convert, training) and its top-level modules, each taken as one
    node, form no cycle either: a package is a layer, not a bag of modules that happen to avoid each other."""

    def layer(module: str) -> str:
        parts = module.split(".")
        return ".".join(parts[:2])

    graph: dict[str, set[str]] = {}
    for module, targets in _graph().items():
        if module.startswith("model."):
            graph.setdefault(layer(module), set()).update(
                layer(target) for target in targets if target.startswith("model.") and layer(target) != layer(module)
            )
    assert _cycles(graph) == []


def test_model_imports_nothing_of_pipeline() -> None:
    offenders = {
        module: sorted(target for target in targets if target.split(".")[0] == "pipeline")
        for module, targets in _graph().items()
        if module.split(".")[0] == "model"
    }
    assert {module: targets for module, targets in offenders.items() if targets} == {}


def test_the_graph_sees_imports_inside_functions() -> None:
    """The reader counts a lazy import and leaves out a TYPE_CHECKING one (guards the guard)."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from model import bundle\n"
        "def f():\n"
        "    from model.inference import load\n"
        "    import pipeline.faults\n"
    )
    names = set(_imported(ast.parse(source), "model.example", False))
    assert {"model.inference.load", "pipeline.faults"} <= names
    assert "model.bundle" not in names
