"""The floors of docs/ARCHITECTURE.md hold: no back-edge, no two-room cycle (checked by the shared
layers tool when present, else by the same rule on the import graph read here), no import cycle between
files, and workflows/ stays orchestration (library objects live in library rooms)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = "cpo_engine"
#: where each installed top package's files live (pyproject.toml [tool.setuptools.package-dir]: kernels/ installs
#: as cpo_engine.kernels)
SOURCES = {PKG: ROOT / "cpo_engine", f"{PKG}.kernels": ROOT / "kernels"}
LIBRARY = {"kernels", "data", "embedding", "causal", "search", "generation", "edits", "distributed", "report",
           "policy", "settings"}
ORCHESTRATION = {"workflows", "commands", "cli"}

#: file cycles that are known and being removed; each entry is the sorted module names of one cycle.
KNOWN_FILE_CYCLES: set[tuple[str, ...]] = set()


def _order() -> list[list[str]]:
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    m = re.search(r'--order "([^"]+)"', text.replace("\n", " "))
    assert m, "docs/ARCHITECTURE.md must state the floor order as --order \"...\""
    return [g.split(",") for g in m.group(1).split()]


def _modules() -> dict[str, Path]:
    """Every module of the installed package (kernels included) -> its file."""
    out = {}
    for name, base in SOURCES.items():
        for f in sorted(base.rglob("*.py")):
            parts = f.relative_to(base).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join((name, *parts))] = f
    return out


def _imports(mod: str, f: Path) -> list[tuple[str, list[str]]]:
    """(imported module, names imported from it) for every import of a file, at module level and inside
    functions alike (a lazy import is still a dependency); relative imports resolved."""
    out = []
    for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"), str(f))):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.split(".") if f.name == "__init__.py" else mod.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((target, [a.name for a in node.names]))
    return out


def _file_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports (``from a import b`` counts as importing a.b when b is a
    module; a parent package's ``__init__`` is not counted unless imported by name)."""
    mods = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for mod, f in mods.items():
        deps = set()
        for target, names in _imports(mod, f):
            if target.split(".")[0] != PKG:
                continue
            for t in [f"{target}.{n}" for n in names if f"{target}.{n}" in mods] or [target]:
                r = resolve(t)
                if r and r != mod:
                    deps.add(r)
        graph[mod] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def _describe(cycle: list[str], graph: dict[str, set[str]]) -> str:
    members = set(cycle)
    return "; ".join(f"{m} -> {', '.join(sorted(graph[m] & members))}" for m in cycle)


def _room(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _edges() -> set[tuple[str, str]]:
    out = set()
    for src_mod, deps in _file_graph().items():
        src = _room(src_mod)
        if src == "__init__":
            continue
        out |= {(src, _room(d)) for d in deps if _room(d) not in (src, "__init__")}
    return out


def test_no_back_edges_and_no_cycles():
    floor = {room: i for i, group in enumerate(_order()) for room in group}
    edges = _edges()
    rooms = {r for e in edges for r in e}
    assert "kernels" in floor, "kernels (cpo_engine.kernels) must have a floor in docs/ARCHITECTURE.md"
    assert rooms <= set(floor), f"rooms missing from the order in docs/ARCHITECTURE.md: {rooms - set(floor)}"
    back = sorted((s, d) for s, d in edges if floor[d] > floor[s])
    assert not back, f"back-edges: {back}"
    assert not [(s, d) for s, d in edges if (d, s) in edges], "two-room cycles"


def test_no_import_cycles_between_files():
    """No two files import each other, directly or around a loop, counting imports inside functions (a lazy
    import hides a cycle from Python, not from the design): the shared piece belongs in a module both import."""
    graph = _file_graph()
    assert "cpo_engine.kernels.dispatch" in graph, "kernels/ must be read as cpo_engine.kernels"
    cycles = [c for c in _cycles(graph) if tuple(c) not in KNOWN_FILE_CYCLES]
    assert not cycles, "import cycles between files:\n" + "\n".join(_describe(c, graph) for c in cycles)


def test_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_library_rooms_never_import_orchestration():
    bad = sorted((s, d) for s, d in _edges() if s in LIBRARY and d in ORCHESTRATION)
    assert not bad, bad


def _classes(f: Path) -> set[str]:
    return {n.name for n in ast.parse(f.read_text(encoding="utf-8")).body if isinstance(n, ast.ClassDef)}


def _lazy_exported(f: Path) -> set[str]:
    """Names a module exports lazily (``lazy_exports(__name__, {"module": ("Name", ...)})``): imports too."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "lazy_exports" and len(node.args) > 1:
            if isinstance(node.args[1], ast.Dict):
                out |= {e.value for v in node.args[1].values if isinstance(v, ast.Tuple) for e in v.elts
                        if isinstance(e, ast.Constant)}
    return out


def _attributes(f: Path) -> set[str]:
    """``x.Name`` attribute names a file uses (``import cpo_engine.workflows.run as r; r.RunResult``)."""
    return {n.attr for n in ast.walk(ast.parse(f.read_text(encoding="utf-8"))) if isinstance(n, ast.Attribute)}


def _users_of_workflow_classes() -> tuple[set[str], list[tuple[str, str, str]]]:
    """(classes defined in workflows/, [(module, how, class)] for each use of one outside workflows/: the package's
    other rooms and the top package (its lazy exports too) and the Ray Jobs entrypoints in jobs/)."""
    mods = _modules()
    wf_classes = set().union(*(_classes(f) for m, f in mods.items() if _room(m) == "workflows"))
    others = {m: f for m, f in mods.items() if _room(m) != "workflows"}
    others |= {f"jobs.{f.stem}": f for f in sorted((ROOT / "jobs").glob("*.py"))}
    used = []
    for mod, f in others.items():
        used += [(mod, f"from {target} import", n) for target, names in _imports(mod, f) for n in names if n in wf_classes]
        used += [(mod, "lazy export", n) for n in _lazy_exported(f) & wf_classes]
        used += [(mod, "attribute", n) for n in _attributes(f) & wf_classes]
    return wf_classes, sorted(set(used))


def test_no_workflow_module_defines_a_class_another_room_imports():
    """workflows/ only composes: no class a workflow module defines is imported by another room (commands and the
    top package included, imports inside functions and lazy exports counted). The configs live in
    cpo_engine.settings, library objects (the policy, the model bundle) in library rooms; a command reads the
    attributes of the result a workflow returns without importing its class."""
    wf_classes, used = _users_of_workflow_classes()
    assert "RunResult" in wf_classes and "RunConfig" not in wf_classes, sorted(wf_classes)
    assert not used, f"classes of workflows/ used by other rooms (move them below workflows): {used}"


def test_workflow_class_check_sees_function_level_imports(tmp_path, monkeypatch):
    """The check above is not vacuous: a command importing a workflow's result class inside a function fails it."""
    cmd = tmp_path / "probe.py"
    cmd.write_text("def run():\n    from cpo_engine.workflows.run import RunResult\n    return RunResult\n")
    real = _modules()
    monkeypatch.setitem(globals(), "_modules", lambda: {**real, f"{PKG}.commands.probe": cmd})
    _, used = _users_of_workflow_classes()
    assert used == [(f"{PKG}.commands.probe", "from cpo_engine.workflows.run import", "RunResult")]


def test_no_workflow_imports_another_workflows_private_helper():
    mods = _modules()
    bad = sorted((mod, target, n) for mod, f in mods.items() if _room(mod) == "workflows"
                 for target, names in _imports(mod, f)
                 if _room(target) == "workflows" and target != mod for n in names if n.startswith("_"))
    assert not bad, bad


def test_policy_import_pulls_no_orchestration():
    """`from cpo_engine import Policy` (and ModelBundle) is a library import: no workflow module is loaded."""
    code = ("import sys; from cpo_engine import ModelBundle, Policy; print(Policy.__module__, ModelBundle.__module__); "
            "print(sorted(m for m in sys.modules if m.startswith('cpo_engine.workflows')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT / "tests")
    assert out.stdout.split("\n")[:2] == ["cpo_engine.policy.policy cpo_engine.policy.bundle", "[]"], out.stdout


def test_no_two_classes_share_a_name():
    """Two classes of the package never share a name (there were two named Policy: the learned policy and
    a target policy of `cpo ope`, now TargetPolicy)."""
    seen: dict[str, list[str]] = {}
    for mod, f in _modules().items():
        for c in _classes(f):
            seen.setdefault(c, []).append(mod)
    assert not {c: m for c, m in seen.items() if len(m) > 1}
