"""Does a prompt the loop promoted beat its incumbent on queries the loop never saw?

For each loop folder given, the prompt a round promoted (by the loop's recorded rule, or, with ``--replay``, by
this checkout's sequential rule replayed on the round's stored rows in the order the stage now runs queries:
bench/results/cs_replay_<date>.json) and the
round's incumbent answer the same fresh queries: the task's queries that are in neither the loop's training nor
its verification files (up to ``--n``, in a seeded order), on one local llama.cpp server with the packaged
SmolLM2-135M-Instruct, in the loop's message layout, greedy, graded by the loop's grader. The paired per-query
difference gets a 95% t interval and a 95% bootstrap interval (bench_vs_dspy.paired).

    .venv/bin/python bench/loop_confirm.py runs/loop_addition_20261207 runs/loop_comparison_20261207 \\
        --replay bench/results/cs_replay_20261207.json

Writes bench/results/loop_confirm_<date>.json and .md (load average at start and end inside).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from bench_vs_dspy import paired, run_prompts  # noqa: E402


def fresh_queries(folder: Path, n: int, seed: int) -> list[dict[str, Any]]:
    """Up to ``n`` of the task's queries the loop neither trained nor verified on, in a seeded order."""
    from cpo_engine.generation.tasks import builtin_table

    cfg = json.loads((folder / "loop_config.json").read_text())
    task = cfg["task"]["kind"]
    if cfg["task"].get("queries"):
        raise SystemExit(f"{folder}: a loop on a user's query table; give fresh queries another way")
    seen: set[str] = set()
    for f in (folder / "data").glob("*_queries*.parquet"):
        if f.name != f"{task}_queries.parquet":
            seen |= set(pq.read_table(f, columns=["query_id"]).column(0).to_pylist())
    rows = [r for r in builtin_table(task).to_pylist() if r["query_id"] not in seen]
    order = np.random.default_rng(seed).permutation(len(rows))[:n]
    return [rows[i] for i in sorted(order)]


def promotions(folder: Path, replay: dict[str, Any] | None) -> list[dict[str, Any]]:
    """(round, incumbent id/text, promoted id/text, by which rule) of every round that promoted."""
    rep = json.loads((folder / "loop_report.json").read_text())
    out = []
    for rnd in rep["rounds"]:
        v = rnd["verification"]
        arms = {a["id"]: a["text"] for a in v["arms"]}
        inc = v["arms"][0]["id"]
        ids, rule = [(v.get("best_promotable") or {}).get("id")], "recorded"
        if replay is not None:
            key = str((folder / f"round-{rnd['round']}" / "verify").relative_to(ROOT))
            hit = [r for r in replay["rounds"] if r["verify_dir"] == key]
            if hit and "new_random_order" in hit[0]:
                ids, rule = hit[0]["new_random_order"]["promoted"], "replayed: betting CS, random query order"
            elif hit:
                ids, rule = hit[0]["new"]["promoted"], "replayed: betting CS, query-id order"
        for pid in [i for i in ids if i]:
            out.append({"round": rnd["round"], "incumbent": {"id": inc, "text": arms[inc]},
                        "promoted": {"id": pid, "text": arms[pid]}, "rule": rule})
    return out


def main() -> int:
    from cpo_engine.generation.local_server import LlamaCppServer, LocalServerConfig

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--replay", default=None, help="a cs_replay_<date>.json: promotions by this checkout's rule")
    ap.add_argument("--n", type=int, default=300, help="fresh queries per loop (fewer when the task has fewer)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out-dir", default=str(ROOT / "bench" / "results"))
    a = ap.parse_args()
    replay = json.loads(Path(a.replay).read_text()) if a.replay else None
    load0 = Path("/proc/loadavg").read_text().split()[:3]
    results = []
    work = ROOT / "runs" / "loop_confirm"
    work.mkdir(parents=True, exist_ok=True)
    with LlamaCppServer(LocalServerConfig(threads=a.threads, n_ctx=4096), work / "llama_server.log") as url:
        for folder in map(Path, a.folders):
            folder = folder.resolve()
            grader = json.loads((folder / "loop_report.json").read_text())["grader"]
            for p in promotions(folder, replay):
                test = fresh_queries(folder, a.n, a.seed)
                print(f"{folder.name} round {p['round']}: {p['promoted']['text']!r} vs {p['incumbent']['text']!r} on "
                      f"{len(test)} fresh queries ({os.getloadavg()[0]:.1f} load)", flush=True)
                sc = run_prompts(url, {"incumbent": p["incumbent"]["text"], "promoted": p["promoted"]["text"]}, test,
                                 grader, a.max_tokens, a.threads)
                results.append(p | {"loop": str(folder.relative_to(ROOT)), "grader": grader, "n_fresh": len(test),
                                    "incumbent_mean": float(np.mean(sc["incumbent"])),
                                    "promoted_mean": float(np.mean(sc["promoted"])),
                                    "promoted_vs_incumbent": paired(sc["promoted"], sc["incumbent"]),
                                    "query_ids": [r["query_id"] for r in test], "scores": sc})
    date = datetime.now(timezone.utc).strftime("%Y%m%d")
    res = {"format": "cpo-loop-confirm/1", "model": "SmolLM2-135M-Instruct (GGUF, llama.cpp), greedy",
           "command": " ".join(sys.argv), "loadavg_start": load0,
           "loadavg_end": Path("/proc/loadavg").read_text().split()[:3],
           "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"), "results": results}
    out = Path(a.out_dir) / f"loop_confirm_{date}.json"
    out.write_text(json.dumps(res, indent=1))
    lines = ["# Promoted prompts re-measured on fresh queries", "", f"`{res['command']}`; {res['model']}; load "
             f"{' '.join(load0)} at start, {' '.join(res['loadavg_end'])} at end. Updated {res['updated']}.", "",
             "| loop, round | promoted (rule) | incumbent | fresh queries | promoted - incumbent (95% t; bootstrap) |",
             "|---|---|---|---|---|"]
    for r in results:
        d = r["promoted_vs_incumbent"]
        lines.append(f"| `{r['loop']}` round {r['round']} | {r['promoted']['text']!r} ({r['rule']}): "
                     f"{r['promoted_mean']:.3f} | {r['incumbent']['text']!r}: {r['incumbent_mean']:.3f} | {r['n_fresh']} "
                     f"| {d['diff']:+.3f} ({d['t_ci'][0]:+.3f} to {d['t_ci'][1]:+.3f}; {d['bootstrap_ci'][0]:+.3f} "
                     f"to {d['bootstrap_ci'][1]:+.3f}) |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("wrote", out, out.with_suffix(".md"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
