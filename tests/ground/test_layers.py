"""The layers hold: each package imports only what its ``__init__`` docstring allows
(lazy imports inside functions and TYPE_CHECKING blocks count too), and no module is
part of an import circle. See ARCHITECTURE.md."""

from __future__ import annotations

import ast
from pathlib import Path

import mongo_backup

SRC = Path(mongo_backup.__file__).parent
GROUND = {"allocator", "errors", "files", "names", "redact", "retry", "workers", "_version"}
# package -> the packages it may import from (besides itself and the ground modules)
ALLOWED: dict[str, set[str]] = {
    "ground": set(),
    "archive": set(),
    "mongo": set(),
    "destinations": set(),
    "location": {"archive", "destinations"},
    "verify": {"archive", "mongo", "location"},
    "backup": {"archive", "mongo", "location", "destinations"},
    "restore": {"verify", "archive", "mongo", "location"},
    "cli": {"backup", "restore", "verify", "location", "archive", "mongo", "destinations"},
}


def room(module: str) -> str:
    """The package a module ``mongo_backup.X[.Y]`` belongs to ("ground" for top level)."""
    parts = module.split(".")
    if len(parts) < 2:
        return "face"
    head = parts[1]
    if head in GROUND:
        return "ground"
    if head in ("__init__", "__main__"):
        return "face"
    return head


def imports() -> dict[str, set[str]]:
    """module -> the project modules it imports, by absolute name."""
    found: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        parts = ["mongo_backup", *path.relative_to(SRC).with_suffix("").parts]
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        name = ".".join(parts)
        base = parts if is_package else parts[:-1]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level:
                    module = ".".join(
                        base[: len(base) - node.level + 1] + ([module] if module else [])
                    )
                targets.add(module)
                targets.update(f"{module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
        found[name] = {t for t in targets if t.startswith("mongo_backup.") and t != name}
    modules = set(found)
    return {name: {t for t in targets if t in modules} for name, targets in found.items()}


def test_the_import_graph_is_found() -> None:
    """The guard of the two tests below: an empty graph would pass them both."""
    graph = imports()
    assert len(graph) > 30, sorted(graph)  # every module of the package
    assert sum(len(targets) for targets in graph.values()) > 100, graph  # and their imports
    assert {room(target) for target in graph["mongo_backup.cli.main"]} > {"ground"}


def test_every_import_stays_in_its_layer() -> None:
    wrong = []
    for module, targets in imports().items():
        here = room(module)
        if here == "face":
            continue  # the package's public face may re-export anything
        for target in targets:
            there = room(target)
            if there not in {here, "ground", *ALLOWED[here]}:
                wrong.append(f"{module} imports {target}")
    assert wrong == []


def test_no_import_circles() -> None:
    graph = imports()
    circles = []
    state: dict[str, int] = {}  # 1 on the path, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    # A package's __init__ importing its children is a re-export, not a circle of design.
    assert [c for c in circles if not c.startswith("mongo_backup -> ")] == []
