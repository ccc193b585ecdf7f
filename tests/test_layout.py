"""The floor plan: every import points down a floor, and no two files (or packages) import each other.

Floors, bottom to top (README, "Layout"): ``pitfalls_editkit`` (the editor contract and
primitives) < ``benchmark`` (splits, cases, metrics) < ``generator`` (dataset
generation) < ``editors`` < ``harness`` (executors, guard, records, pytest
plugin) < ``reports``. Every import is read from the source with ``ast``, also
the ones inside functions, so a lazy import cannot hide a wrong direction.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import REPO

FLOORS = ["pitfalls_editkit", "pitfalls_benchmark", "pitfalls_generator", "editors", "harness", "reports"]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for floor in FLOORS for p in (REPO / floor).rglob("*.py")}


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """Project modules that ``path`` imports (resolved to the most specific known module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    known = set(modules)
    graph = {name: imports_of(path, name, known) for name, path in modules.items()}
    # Importing a package runs its __init__; a module's package is not counted as its import (it is its own floor).
    return {name: {t for t in targets if not name.startswith(t + ".")} for name, targets in graph.items()}


def floor_of(module: str) -> int:
    return FLOORS.index(module.split(".")[0])


def test_every_import_points_down_a_floor_or_stays_in_its_package():
    upward = [(m, t) for m, targets in import_graph().items() for t in targets if floor_of(t) > floor_of(m)]
    assert upward == []


def test_no_file_imports_another_that_imports_it_back():
    graph = import_graph()
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert cycles == []


def test_the_contract_floor_imports_no_floor_above_and_loads_torch_lazily():
    assert all(floor_of(t) == 0 for m, targets in import_graph().items() if floor_of(m) == 0 for t in targets)
    import subprocess
    import sys

    code = ("import sys, pitfalls_editkit.facts, pitfalls_benchmark.splits, harness.plugin, reports.plugin, editors.registry, pitfalls_editkit.contract; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr  # the installed pytest plugin costs other projects no torch import


def test_the_splits_table_is_the_one_place_split_facts_live():
    """No module but the table spells a split's file name or pitfall rule."""
    spelled = []
    for name, path in project_modules().items():
        if name == "pitfalls_benchmark.splits":
            continue
        text = path.read_text(encoding="utf-8")
        for needle in ("coverage_edit.json", "reverse_edit.json", "composite_edit.json", '"easy.json"', "conflict_prompts.json",
                       '("CS_imp", 0)', '("FR", 1)'):
            if needle in text:
                spelled.append((name, needle))
    assert spelled == []
