"""The floors of docs/ARCHITECTURE.md hold: no back-edge, no two-room cycle (checked by the shared
layers tool when present, else by the same rule on the import graph read here)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _order() -> list[list[str]]:
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    m = re.search(r'--order "([^"]+)"', text.replace("\n", " "))
    assert m, "docs/ARCHITECTURE.md must state the floor order as --order \"...\""
    return [g.split(",") for g in m.group(1).split()]


def _edges() -> set[tuple[str, str]]:
    pkg = ROOT / "cpo_engine"
    out = set()
    for f in pkg.rglob("*.py"):
        rel = f.relative_to(pkg).parts
        src = rel[0].removesuffix(".py")
        if src == "__init__":
            continue
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
            for n in names:
                parts = n.split(".")
                if parts[0] == "cpo_engine" and len(parts) > 1 and parts[1] != src:
                    out.add((src, parts[1]))
    return out


def test_no_back_edges_and_no_cycles():
    floor = {room: i for i, group in enumerate(_order()) for room in group}
    edges = _edges()
    rooms = {r for e in edges for r in e} - {"kernels"}
    assert rooms <= set(floor), f"rooms missing from the order in docs/ARCHITECTURE.md: {rooms - set(floor)}"
    back = sorted((s, d) for s, d in edges if s in floor and d in floor and floor[d] > floor[s])
    assert not back, f"back-edges: {back}"
    assert not [(s, d) for s, d in edges if (d, s) in edges], "two-room cycles"


def test_library_rooms_never_import_orchestration():
    library = {"data", "embedding", "causal", "search", "generation", "edits", "distributed", "report"}
    bad = sorted((s, d) for s, d in _edges() if s in library and d in {"workflows", "commands", "cli"})
    assert not bad, bad
