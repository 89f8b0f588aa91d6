"""The package's shape, checked so it stays true: imports point down, no private names cross modules.

Read with ``ast`` (nothing is imported), so the check costs milliseconds and sees lazy imports inside
functions too: a circle closed by a function-level import is still a circle for a reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "psychocounsel"


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _imports(mods: dict[str, Path]) -> dict[str, list[tuple[str, list[str]]]]:
    """module -> [(imported module, names imported from it)] for imports inside the package."""
    found: dict[str, list[tuple[str, list[str]]]] = {}
    for name, path in mods.items():
        base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        edges = []
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                edges += [(a.name, []) for a in node.names if a.name in mods]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    target = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target not in mods:
                    continue
                names = [a.name for a in node.names]
                submodules = [n for n in names if f"{target}.{n}" in mods]
                edges += [(f"{target}.{n}", []) for n in submodules]
                edges.append((target, [n for n in names if n not in submodules]))
        found[name] = edges
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    mods = _modules()
    graph = {m: {t for t, _ in edges if t != m and t != "psychocounsel"} for m, edges in _imports(mods).items()}
    assert _cycles(graph) == []


def test_no_private_names_imported_across_modules():
    private = [f"{m} imports {n} from {t}" for m, edges in _imports(_modules()).items() for t, names in edges
               for n in names if n.startswith("_") and not n.startswith("__")]
    assert private == []


def test_top_level_is_a_short_map_of_the_stages():
    entries = sorted(p.name for p in PKG.iterdir() if p.name != "__pycache__")
    assert len(entries) <= 19, entries  # the stages' folders, the shared bottom modules (store, web, ...)
    for stage in ("backends", "rubric", "dataset", "training", "evaluation", "safety", "measures", "annotate"):
        assert (PKG / stage / "__init__.py").exists(), stage
