"""The package's import graph has no cycles: every import counts, those under ``TYPE_CHECKING``
and inside functions included, so dependencies point one way (data → models → acquisition →
validation → tools → agent → cli)."""

from __future__ import annotations

import ast
from pathlib import Path

import matloop

ROOT = Path(matloop.__file__).parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = ("matloop", *path.relative_to(ROOT).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module → the matloop modules it imports (a name imported from a package counts as its
    submodule when there is one, else as the package)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets.update(
                    f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names
                )
        deps = set()
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target.startswith("matloop") and target != name:
                deps.add(target)
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path ``[a, b, ..., a]``, or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_type_checking_and_function_level_imports() -> None:
    graph = import_graph()
    assert "matloop.agent.session" in graph["matloop.agent.rules"]  # under TYPE_CHECKING
    assert "matloop.agent.llm" in graph["matloop.agent.campaign"]  # inside a function


def test_matloop_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


LAYERS = ("data", "models", "acquisition", "validation", "tools", "agent", "cli")


def _layer(module: str) -> int | None:
    part = module.split(".")[1] if module.count(".") else ""
    return LAYERS.index(part) if part in LAYERS else None


def test_layers_import_only_downwards() -> None:
    """A module of one layer imports nothing from a layer above it (e.g. models never import
    validation, tools never import agent)."""
    upward = [
        f"{module} → {dep}"
        for module, deps in import_graph().items()
        if (low := _layer(module)) is not None
        for dep in deps
        if (high := _layer(dep)) is not None and high > low
    ]
    assert not upward, upward
