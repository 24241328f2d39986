"""The house: no module of hub/ takes part in an import circle, and none outgrows what one reader holds in mind.

The floors themselves (which package may import which) are import-linter contracts in
pyproject.toml, checked by `lint-imports` in scripts/test.sh.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import grimp

HUB = Path(__file__).resolve().parents[2] / "hub"
MAX_LINES = 500


def _circles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return found


def test_no_module_of_hub_takes_part_in_an_import_circle() -> None:
    graph = grimp.build_graph("hub", cache_dir=None)
    assert _circles(graph) == []


def test_the_circle_finder_finds_a_circle() -> None:
    graph = grimp.ImportGraph()
    for a, b in (("x.a", "x.b"), ("x.b", "x.c"), ("x.c", "x.a"), ("x.c", "x.d")):
        graph.add_import(importer=a, imported=b)
    assert _circles(graph) == [["x.a", "x.b", "x.c"]]


def test_no_module_of_hub_is_longer_than_one_reader_holds_in_mind() -> None:
    long = {
        str(path.relative_to(HUB.parent)): n
        for path in sorted(HUB.rglob("*.py"))
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_every_room_of_hub_stands_on_a_floor_of_the_import_contract() -> None:
    """A module or package the layers contract does not name would escape it unchecked."""
    pyproject = tomllib.loads((HUB.parent / "pyproject.toml").read_text())
    (contract,) = pyproject["tool"]["importlinter"]["contracts"]
    named = {room.strip() for layer in contract["layers"] for room in layer.split("|")}
    rooms = {f"hub.{p.stem}" for p in HUB.glob("*.py") if p.stem != "__init__"}
    rooms |= {f"hub.{p.name}" for p in HUB.iterdir() if (p / "__init__.py").is_file()}
    assert rooms - named == set()
