"""The project's layout rules (README "Layout"), checked by parsing the imports with `ast`.

- every module in `tasks/` defines a Prefect `@task`, every module in `flows/` a `@flow`;
- only `flows/` imports `tasks/`; only the CLI (`glow.cli`) and the API (`glow.api`) import
  `flows/` (a flow may use another flow);
- no module under `glow/`, `flows/`, `tasks/`, `rubrics/` is over 600 lines;
- no import cycle among the project's modules, counting every import that runs: module-level
  imports and imports inside functions alike (an import under `if TYPE_CHECKING:` never runs and
  is left out). A package's `__init__` importing its own submodules is no cycle: an edge goes to
  the module named, not to the packages above it.

Nothing is imported or run here: the rules are read from the source, so a broken module cannot
hide a broken rule.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("glow", "flows", "tasks", "rubrics")
MAX_LINES = 600

# What the grading restructuring (issue 12, branch grade2) removes: the cell's grading and
# regrade move out of tasks/grade.py, which defines no task today, and `glow regrade` runs a flow.
# Each entry is (importer, imported); a test fails once an entry no longer applies, so these
# lists only ever shrink.
PENDING: frozenset[tuple[str, str]] = frozenset()
PENDING_NO_TASK: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    lazy: bool  # inside a function: runs when called, not when the module is imported


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(name: str) -> str | None:
    """The project module an imported name lives in (None: not the project's)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _walk(node: ast.AST, lazy: bool) -> Iterator[tuple[ast.AST, bool]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            for other in child.orelse:
                yield from _walk(other, lazy)
            continue
        inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        yield child, inner
        yield from _walk(child, inner)


def _imports(module: str) -> list[Import]:
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node, lazy in _walk(tree, False):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from glow import results` imports the module glow.results, `from glow.models
            # import Cell` the module glow.models.
            names = [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            target = _resolve(name)
            if target is not None and target != module:
                found.append(Import(module, target, node.lineno, lazy))
    return found


IMPORTS = [imp for module in MODULES for imp in _imports(module)]


def _top(module: str) -> str:
    return module.split(".")[0]


def _decorated_with(path: Path, decorator: str) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for dec in node.decorator_list:
                target = dec.func if isinstance(dec, ast.Call) else dec
                if isinstance(target, ast.Name) and target.id == decorator:
                    return True
    return False


def test_every_tasks_module_defines_a_task() -> None:
    modules = {m: p for m, p in MODULES.items() if _top(m) == "tasks" and p.name != "__init__.py"}
    assert modules
    without = {m for m, p in modules.items() if not _decorated_with(p, "task")}
    assert sorted(without - PENDING_NO_TASK) == []
    assert sorted(PENDING_NO_TASK - without) == []  # done: remove it from PENDING_NO_TASK


def test_every_flows_module_defines_a_flow() -> None:
    modules = [p for m, p in MODULES.items() if _top(m) == "flows" and p.name != "__init__.py"]
    assert modules
    assert [str(p) for p in modules if not _decorated_with(p, "flow")] == []


def test_only_flows_import_tasks() -> None:
    wrong = [
        f"{imp.importer}:{imp.line} imports {imp.imported}"
        for imp in IMPORTS
        if _top(imp.imported) == "tasks"
        and _top(imp.importer) != "flows"
        and (imp.importer, imp.imported) not in PENDING
    ]
    assert wrong == []


def test_only_the_cli_and_the_api_import_flows() -> None:
    allowed = ("glow.cli", "glow.api")
    wrong = [
        f"{imp.importer}:{imp.line} imports {imp.imported}"
        for imp in IMPORTS
        if _top(imp.imported) == "flows"
        and _top(imp.importer) != "flows"
        and not any(imp.importer == a or imp.importer.startswith(a + ".") for a in allowed)
    ]
    assert wrong == []


def test_pending_exceptions_still_exist() -> None:
    """An exception that no longer applies is removed from PENDING, so none outlives its need."""
    edges = {(imp.importer, imp.imported) for imp in IMPORTS}
    assert sorted(PENDING - edges) == []


def test_no_module_over_600_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in MODULES.values()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` (as a path that ends where it starts), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle() -> None:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for imp in IMPORTS:
        if (imp.importer, imp.imported) not in PENDING:
            graph[imp.importer].add(imp.imported)
    assert _cycle(graph) is None


def _defined(module: str) -> set[str] | None:
    """The names a module defines or imports at its top level (None: it star-imports)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    names: set[str] = set()
    for node, _ in _walk(tree, False):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            if any(alias.name == "*" for alias in node.names):
                return None
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


def test_imported_names_exist() -> None:
    """`from glow.x import name` names something glow.x has: a stale lazy import (a name that
    moved to another module) fails only when its function runs, so it is caught here."""
    missing = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or node.level or node.module not in MODULES:
                continue
            defined = _defined(node.module)
            for alias in node.names:
                name = alias.name
                if defined is None or name in defined or f"{node.module}.{name}" in MODULES:
                    continue
                missing.append(f"{module}:{node.lineno} from {node.module} import {name}")
    assert missing == []


def test_the_cycle_check_can_fail() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
