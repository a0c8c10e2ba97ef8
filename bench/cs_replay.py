"""Replay finished sequential verifications with another confidence sequence, from their stored rows (no LLM call).

A loop round's ``verify/verified_triplets.parquet`` holds every (query, prompt) score the sequential procedure
paid for; it ran its queries in the order its ``sequential.query_order`` records (query-id order before that was
recorded). This script rebuilds the paired differences of each candidate
against the incumbent, in that order, and runs :func:`cpo_engine.causal.sequential.sequential_verify` on them twice:

- with the module as it was at ``--old`` (a git revision; default: the empirical-Bernstein CS of 16703e7);
- with the module in this checkout (the hedged betting CS), same alpha, budget, batch and margin;
- with this checkout's rule in the order the stage now runs queries (a permutation seeded by ``verify.seed``),
  where the round was recorded in query-id order.

The replay of the rule that made the record (the record's ``rule`` says which) must take the recorded decisions,
a check that the replay is faithful: it stops loudly otherwise. A candidate the other rule keeps running past
the queries the recorded one paid for would need rows that were never generated: the replay counts such a
query as a failed call (dropped) and reports how many there were, so a decision that leans on them is visible. Results: bench/results/cs_replay_<date>.json and .md.

Run: ``.venv/bin/python bench/cs_replay.py [LOOP_FOLDER ...]`` (default: the loops recorded in bench/results and
the DSPy comparison's loops under runs/bench_vs_dspy).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cpo_engine.causal import sequential as new_sq  # noqa: E402


def old_module(rev: str) -> Any:
    """cpo_engine/causal/sequential.py as it was at git revision ``rev``, imported under another name."""
    src = subprocess.run(["git", "show", f"{rev}:cpo_engine/causal/sequential.py"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "sequential_old.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("sequential_old", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["sequential_old"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def default_folders() -> list[Path]:
    out = []
    for f in sorted((ROOT / "bench" / "results").glob("loop_smollm2_*.json")):
        folder = (json.loads(f.read_text()).get("machine") or {}).get("loop_folder")
        if folder and (ROOT / folder).is_dir():
            out.append(ROOT / folder)
    for sub in ("loop", "loop_matched"):
        out += sorted(p.parent for p in (ROOT / "runs" / "bench_vs_dspy").glob(f"*/{sub}/loop_report.json"))
    return list(dict.fromkeys(out))


def paired(verify_dir: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(arm ids with the incumbent first, query ids in the order the rule saw them, (candidates, queries) paired
    differences with NaN where a cell was never run)."""
    v = json.loads((verify_dir / "verification.json").read_text())
    arms = [a["id"] for a in v["arms"]]
    t = pq.read_table(verify_dir / "verified_triplets.parquet", columns=["query_id", "prompt_id", "score"]).to_pylist()
    # the rows are stored as the calls completed; the stage records the order it ran the queries in (a seeded
    # random one), and before it did (2026-12-07) it ran them in query-id order (workflows.verify.sample_queries)
    order = v["sequential"].get("query_order") or sorted({r["query_id"] for r in t if r["prompt_id"] == arms[0]})
    cells: dict[tuple[str, str], list[float]] = {}
    for r in t:
        if r["score"] is not None:
            cells.setdefault((r["prompt_id"], r["query_id"]), []).append(float(r["score"]))
    Y = np.array([[np.mean(cells[(a, q)]) if (a, q) in cells else np.nan for q in order] for a in arms])
    return arms, order, Y[1:] - Y[:1]


def replay(mod: Any, d: np.ndarray, seq: dict[str, Any], n_queries: int, samples: int) -> tuple[Any, int]:
    """``mod.sequential_verify`` on the stored differences; also the count of cells it asked for that were never run."""
    missing = [0]

    def draw(active: list[int], a: int, b: int) -> np.ndarray:
        x = d[active, a:b]
        missing[0] += int(np.isnan(x).sum())
        return x

    res = mod.sequential_verify(draw, d.shape[0], n_queries, seq["budget_calls"], alpha=seq["alpha"],
                                margin=seq.get("margin", 0.0), batch=seq["batch"], samples=samples,
                                sd=seq["power"]["assumed_sd"])
    return res, missing[0]


def one_round(verify_dir: Path, old: Any) -> dict[str, Any]:
    v = json.loads((verify_dir / "verification.json").read_text())
    seq = v["sequential"]
    samples = int(v["config"]["verify"].get("samples", 1))
    arms, order, d = paired(verify_dir)
    n_queries = len(order)
    o, o_missing = replay(old, d, seq, n_queries, samples)
    n, n_missing = replay(new_sq, d, seq, n_queries, samples)
    made_by_new = "betting" in seq["rule"]  # a record made by this checkout's rule: that replay must reproduce it
    check, missing = (n, n_missing) if made_by_new else (o, o_missing)
    got = {arms[c.index + 1]: (c.decision, c.n) for c in check.candidates}
    want = {c["id"]: (c["decision"], c["queries"]) for c in seq["candidates"]}
    if got != want or missing:
        raise SystemExit(f"{verify_dir}: the replay with the {'new' if made_by_new else 'old'} rule does not take the "
                         f"recorded decisions ({got} vs {want}; {missing} cells missing)")
    # the current stage's order (a seeded permutation of the sampled queries, workflows.verify_sequential): for a
    # round recorded in id order with every query used, the order it would run today; cells it needs that the
    # recorded run never made are counted
    ids = sorted(order)
    perm = np.random.default_rng([int(v["config"]["verify"].get("seed", 0)), 1]).permutation(len(ids))
    pos = {q: i for i, q in enumerate(order)}
    r, r_missing = replay(new_sq, d[:, [pos[ids[i]] for i in perm]], seq, n_queries, samples)
    cands = []
    for c_old, c_new in zip(o.candidates, n.candidates):
        cands.append({"id": arms[c_old.index + 1], "old": {"decision": c_old.decision, "queries": c_old.n,
                                                            "cs": [c_old.ci_low, c_old.ci_high]},
                      "new": {"decision": c_new.decision, "queries": c_new.n, "cs": [c_new.ci_low, c_new.ci_high]},
                      "mean_uplift_all_run": float(np.nanmean(d[c_old.index]))})
    return {"verify_dir": str(verify_dir.relative_to(ROOT)), "queries": n_queries, "candidates": len(arms) - 1,
            "recorded_with": "new" if made_by_new else "old",
            "alpha": seq["alpha"], "budget_calls": seq["budget_calls"],
            "old": {"rule": seq["rule"], "calls": o.calls, "detectable": o.detectable,
                    "promoted": [arms[i + 1] for i in o.promoted]},
            "new": {"rule": "hedged betting CS (Waudby-Smith & Ramdas 2024, Theorem 3), bets tuned to the planned "
                            "queries", "calls": n.calls, "detectable": n.detectable,
                    "promoted": [arms[i + 1] for i in n.promoted], "cells_never_run": n_missing},
            "old_cells_never_run": o_missing,
            "new_random_order": {"promoted": [arms[i + 1] for i in r.promoted], "calls": r.calls,
                                 "cells_never_run": r_missing,
                                 "decisions": {arms[c.index + 1]: [c.decision, c.n] for c in r.candidates}},
            "per_candidate": cands}


def render(res: dict[str, Any]) -> str:
    lines = ["# Sequential verifications replayed with the betting confidence sequence", "",
             f"Old rule: `{res['old_rev']}` (empirical-Bernstein CS); new: this checkout (hedged betting CS). Replayed "
             "from each round's stored rows, no LLM call; the replay of the rule that ran a round takes its recorded "
             "decisions (checked). "
             f"Updated {res['updated']}.", "",
             "| verification (rule that ran it) | queries x candidates | detectable uplift old -> new | calls old -> new | "
             "promoted old | promoted new | cells never run (old, new) | new rule, random order: promoted, calls "
             "(cells never run) |", "|---|---|---|---|---|---|---|---|"]
    for r in res["rounds"]:
        lines.append(f"| `{r['verify_dir']}` ({r['recorded_with']}) | {r['queries']} x {r['candidates']} | "
                     f"{r['old']['detectable']:.3f} -> {r['new']['detectable']:.3f} | {r['old']['calls']} -> "
                     f"{r['new']['calls']} | {', '.join(r['old']['promoted']) or '-'} | "
                     f"{', '.join(r['new']['promoted']) or '-'} | {r['old_cells_never_run']}, "
                     f"{r['new']['cells_never_run']} | {', '.join(r['new_random_order']['promoted']) or '-'}, "
                     f"{r['new_random_order']['calls']} ({r['new_random_order']['cells_never_run']}) |")
    lines += ["", "Per candidate (decision after queries; CS of the mean uplift):", ""]
    for r in res["rounds"]:
        lines.append(f"- `{r['verify_dir']}`: " + "; ".join(
            f"{c['id']} {c['old']['decision']}@{c['old']['queries']} "
            f"[{c['old']['cs'][0]:+.2f}, {c['old']['cs'][1]:+.2f}] -> {c['new']['decision']}@{c['new']['queries']} "
            f"[{c['new']['cs'][0]:+.2f}, {c['new']['cs'][1]:+.2f}]" for c in r["per_candidate"]))
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="*", help="loop folders (default: see the module docstring)")
    ap.add_argument("--old", default="16703e7", help="git revision of the old rule")
    ap.add_argument("--out-dir", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--date", default=None)
    a = ap.parse_args()
    old = old_module(a.old)
    rounds = []
    for folder in [Path(f).resolve() for f in a.folders] or default_folders():
        for vdir in sorted(folder.glob("round-*/verify")):
            if (vdir / "verification.json").is_file() and "sequential" in json.loads(
                    (vdir / "verification.json").read_text()):
                rounds.append(one_round(vdir, old))
                r = rounds[-1]
                print(f"{r['verify_dir']}: promoted {r['old']['promoted']} -> {r['new']['promoted']}, calls "
                      f"{r['old']['calls']} -> {r['new']['calls']}", flush=True)
    date = a.date or datetime.now(timezone.utc).strftime("%Y%m%d")
    res = {"format": "cpo-cs-replay/1", "old_rev": a.old, "updated": datetime.now(timezone.utc).isoformat(
        timespec="seconds"), "rounds": rounds}
    out = Path(a.out_dir) / f"cs_replay_{date}.json"
    out.write_text(json.dumps(res, indent=1))
    out.with_suffix(".md").write_text(render(res))
    print("wrote", out, out.with_suffix(".md"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
