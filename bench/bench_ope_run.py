"""`cpo run` on observational logs whose truth is known: one prompt per query drawn from the bundled full
grid (real LLaMA-2 outcomes, svamp + mawps, 16 prompts) by a known confounded logging policy, with and
without the propensity column. The run reports each policy's doubly robust value on its held-out
queries; this script compares them with the truth (the grid's cell means on those queries) and writes
bench/results/ope_run.json.

    python bench/bench_ope_run.py                        # observable confounding, strength 2, exploration 0.2
    python bench/bench_ope_run.py --strength -2 --exploration 0.2 --seed 1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def truth_of(run_dir: Path, grid: dict, static_id: str) -> dict[str, float]:
    """True held-out value of the run's per-query choice, of its best static prompt and of the logs."""
    import pyarrow.parquet as pq

    a = pq.read_table(run_dir / "search" / "assignment.parquet").to_pylist()
    test = [r for r in a if r["split"] == "test"]
    return {"per-query, causal (LCB)": float(np.mean([grid[(r["query_id"], r["recommended_prompt_id"])] for r in test])),
            f"best static ({static_id})": float(np.mean([grid[(r["query_id"], static_id)] for r in test])),
            "n_test": len(test)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--strength", type=float, default=2.0)
    ap.add_argument("--exploration", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="runs/bench_ope_run")
    ap.add_argument("--out", default="bench/results/ope_run.json")
    args = ap.parse_args()
    import pyarrow.parquet as pq

    from cpo_engine.causal.evaluation import EvaluationConfig, observational_logs
    from cpo_engine.data import load_example
    from cpo_engine.data.config import DataConfig
    from cpo_engine.search import ProposerConfig
    from cpo_engine.utils import atomic_write_json, versions
    from cpo_engine.settings import RunConfig
    from cpo_engine.workflows.run import run

    table = load_example()
    cells = table.group_by(["query_id", "prompt_id"]).aggregate([("score", "mean")]).to_pylist()
    grid = {(r["query_id"], r["prompt_id"]): r["score_mean"] for r in cells}
    cfg = EvaluationConfig(confounding="observable", strength=args.strength, exploration=args.exploration)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    out: dict = {"config": vars(args), "versions": versions(), "runs": {}}
    for with_prop in (True, False):
        name = "with_propensity" if with_prop else "without_propensity"
        logs = observational_logs(table, cfg, per_query=1, seed=args.seed, with_propensity=with_prop)
        pq.write_table(logs, work / f"{name}.parquet")
        result = run(RunConfig(data=DataConfig(path=str(work / f"{name}.parquet")), out=str(work / name),
                               proposer=ProposerConfig(kind="none"), seed=args.seed))
        values = result.evaluation["policy_values"]
        static_id = result.evaluation["static_prompt_id"]
        truth = truth_of(work / name, grid, static_id)
        rows = {}
        for policy, v in values["values"].items():
            t = truth.get(policy)
            rows[policy] = {k: v[k] for k in ("value", "ci_low", "ci_high", "kind", "method")} | {
                "truth": t, "covered": None if t is None else bool(v["ci_low"] <= t <= v["ci_high"]),
                "off_support": (values["estimators"].get(policy, {}).get("dr") or {}).get("off_support"),
                "bounds": (values["estimators"].get(policy, {}).get("dr") or {}).get("bounds")}
        out["runs"][name] = {"method": values["method"], "propensity_source": values["diagnostics"].get(
            "propensity_source"), "n_test": truth["n_test"], "policies": rows,
            "logged_mean": float(np.mean(logs.column("score").to_numpy()))}
        print(name, json.dumps(rows, indent=1))
    atomic_write_json(Path(args.out), out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
