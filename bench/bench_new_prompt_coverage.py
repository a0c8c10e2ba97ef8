"""Coverage of predicted-uplift intervals for prompts never logged, on real LLaMA-2 outcomes.

On the shared dev grid (every prompt ran on every query, so a prompt's true uplift is known), each prompt in
turn is held out as "never logged":

1. the engine's path of `cpo run` on the table without it: MiniLM embeddings, both PCAs fitted on the
   remaining prompts and all queries, the query split of `cpo run` (``split_queries``, 30% of the queries
   held out as `cpo run` does by default), the causal model fitted on the training queries' rows (``training_logs`` and
   ``CausalConfig.make_model().fit`` as ``fit_models`` does; ``final_alpha=0``: the head predictions use is the
   unpenalized one, which the penalty does not change, and its cross-validated choice costs 40x the fit), the best
   static prompt chosen by ``choose_static``, the prompt-level error by ``leave_prompts_out`` (what ``learn_state``
   stores in policy.json; ``--max-lopo`` prompts held out inside the fit, to bound the time);
2. the held-out prompt is embedded through the fitted prompt PCA as a searched prompt is, and the model predicts
   its uplift over the best static prompt on the held-out queries (as ``cpo verify`` does), with the old interval
   (coefficient error, ``+- 1.96 se``) and the new one (``+- t_{n-1} sqrt(se^2 + sigma^2)``);
3. its true uplift: the mean over the held-out queries of the cell-mean difference (4-5 samples a cell).

Coverage is over the held-out prompts of every task (and ``--seeds``: other query samples and splits of the same
prompts), old interval vs new; MC se ``sqrt(c(1-c)/n)`` treats the held-out prompts as independent (they are not
quite: one task's held-out prompts share its queries, seeds share the prompts, and "svamp" contains every mawps
question).

    python bench/bench_new_prompt_coverage.py --seeds 0,1,2   # mawps, svamp (16 prompts), gsm8k (6): ~6 min
    python bench/bench_new_prompt_coverage.py --tasks mawps --max-queries 200                # quick

Writes bench/results/new_prompt_coverage_<date>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEV_DATA = ROOT.parent / "shared" / "data" / "prompt_oirl_llama2_dev.parquet"
SPLITS = {"mawps": "test", "svamp": "test", "gsm8k": "train"}  # the slices with the most prompts


def load_task(task: str, max_queries: int, seed: int):
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    t = pq.read_table(DEV_DATA, columns=["task", "split", "query_id", "query_text", "prompt_id", "prompt_text",
                                         "score"])
    t = t.filter(pc.and_(pc.equal(t["task"], task), pc.equal(t["split"], SPLITS[task])))
    qids = np.unique(np.asarray(t["query_id"].to_pylist(), dtype=object))
    if len(qids) > max_queries:
        qids = np.random.default_rng(seed).choice(qids, max_queries, replace=False)
        t = t.filter(pc.is_in(t["query_id"], value_set=pa.array(list(qids))))
    return t, len(qids)


def held_out_prompt(rep, table, prompt_id: str, seed: int, max_lopo: int, test_fraction: float) -> dict:
    import pyarrow.compute as pc

    from cpo_engine.causal.config import CausalConfig
    from cpo_engine.causal.new_prompt_error import leave_prompts_out
    from cpo_engine.causal.static_choice import choose_static
    from cpo_engine.data.grid import cell_means, split_queries
    from cpo_engine.embedding.config import PCAConfig
    from cpo_engine.settings import HoldoutConfig
    from cpo_engine.workflows.common import scores_and_weights
    from cpo_engine.workflows.run import training_logs

    logged = table.filter(pc.not_equal(table["prompt_id"], prompt_id))
    new_text = table.filter(pc.equal(table["prompt_id"], prompt_id))["prompt_text"][0].as_py()
    reps = rep.represent(logged, PCAConfig(), show_progress=False)
    train, test = split_queries(reps.query_texts, test_fraction, seed)
    logs = training_logs(logged, reps, train, HoldoutConfig(test_fraction=test_fraction), seed)
    model = CausalConfig(final_alpha=0.0).make_model(device="cpu", random_state=seed)
    model.fit(logs.y, reps.T[logs.p], X=reps.X[logs.q], groups=logs.q, sample_weight=logs.w)
    choice = choose_static(logs.q, logs.p, logs.y, reps.X, [str(p) for p in reps.prompt_ids],
                           query_texts=list(reps.query_texts), seed=seed)
    npe = leave_prompts_out(model, reps.X, reps.T, choice, max_prompts=max_lopo)
    s = choice.index
    t_new = rep.prompt_embedder(reps)([new_text])
    pred, se = model.linear_head().static_effect(reps.X[test], t_new, t_base=reps.T[s])
    pred, se = float(pred[0]), float(se[0])
    # the truth: the held-out prompt's cells on the held-out queries (same query order as reps)
    qindex = {q: i for i, q in enumerate(reps.query_ids)}
    new_rows = table.filter(pc.equal(table["prompt_id"], prompt_id))
    yn = np.asarray(new_rows["score"].to_numpy(zero_copy_only=False), dtype=np.float64)
    qn = np.array([qindex[q] for q in new_rows["query_id"].to_pylist()])
    new_cells = np.bincount(qn, weights=yn, minlength=len(qindex)) / np.maximum(np.bincount(qn, minlength=len(qindex)), 1)
    y, _ = scores_and_weights(logged)
    Y, _ = cell_means(reps.row_query, reps.row_prompt, y, len(reps.query_ids), len(reps.prompt_ids))
    d = new_cells[test] - Y[test, s]
    truth, truth_se = float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))
    out = {"prompt_id": prompt_id, "reference": str(reps.prompt_ids[s]), "predicted": pred, "se_coef": se,
           "truth": truth, "truth_se": truth_se, "n_train_queries": int(len(train)), "n_test_queries": int(len(test)),
           "old_low": pred - 1.96 * se, "old_high": pred + 1.96 * se}
    out["old_covered"] = bool(out["old_low"] <= truth <= out["old_high"])
    if npe is not None:
        lo, hi = npe.interval(pred, se)
        out.update(sigma=npe.sigma, n_lopo=npe.n_prompts, new_low=float(lo), new_high=float(hi),
                   new_covered=bool(lo <= truth <= hi),
                   lopo=[{k: r[k] for k in ("residual", "se_pred", "se_meas")} for r in npe.residuals])
    return out


def coverage(rows: list[dict], key: str) -> dict:
    c = [r[key] for r in rows if key in r]
    if not c:
        return {"n": 0}
    m = float(np.mean(c))
    return {"coverage": m, "n": len(c), "mc_se": float(np.sqrt(m * (1 - m) / len(c)))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", default="mawps,svamp,gsm8k")
    ap.add_argument("--max-queries", type=int, default=1000, help="queries sampled per task")
    ap.add_argument("--max-lopo", type=int, default=8, help="prompts held out inside each fit (refits)")
    ap.add_argument("--test-fraction", type=float, default=0.3, help="held-out share of the queries, as `cpo run`")
    ap.add_argument("--seeds", default="0", help="comma-separated: each seed draws other queries and another split")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import warnings

    from cpo_engine.causal.diagnostics import CausalDiagnosticWarning

    warnings.simplefilter("ignore", CausalDiagnosticWarning)  # small refits warn on every fit; the json says so
    from cpo_engine.embedding.config import EmbedConfig
    from cpo_engine.policy.represent import Representer

    t0 = time.perf_counter()
    load0 = os.getloadavg()
    rep = Representer(EmbedConfig(cache_dir=str(ROOT / ".cpo_cache" / "embeddings"), device="cpu"))
    rows, per_task = [], {}
    seeds = [int(x) for x in args.seeds.split(",")]
    for task in args.tasks.split(","):
        task_rows = []
        for seed in seeds:
            table, n_q = load_task(task, args.max_queries, seed)
            prompts = list(dict.fromkeys(table["prompt_id"].to_pylist()))
            for pid in prompts:
                r = held_out_prompt(rep, table, pid, seed, args.max_lopo, args.test_fraction) | {"task": task,
                                                                                                 "seed": seed}
                task_rows.append(r)
                print(f"{task:6} {seed} {pid:10} pred {r['predicted']:+.3f} truth {r['truth']:+.3f} old "
                      f"[{r['old_low']:+.3f}, {r['old_high']:+.3f}] new [{r.get('new_low', np.nan):+.3f}, "
                      f"{r.get('new_high', np.nan):+.3f}] sigma {r.get('sigma', np.nan):.3f}", flush=True)
        rows += task_rows
        per_task[task] = {"queries": n_q, "prompts": len(prompts), "split": SPLITS[task],
                          "old": coverage(task_rows, "old_covered"), "new": coverage(task_rows, "new_covered")}
    result = {"bench": "new_prompt_coverage", "command": " ".join([sys.executable, *sys.argv]),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "config": vars(args), "load_average_start": load0, "load_average_end": os.getloadavg(),
              "seconds": time.perf_counter() - t0, "level": 0.95,
              "old": coverage(rows, "old_covered"), "new": coverage(rows, "new_covered"),
              "mean_abs_error": float(np.mean([abs(r["predicted"] - r["truth"]) for r in rows])),
              "per_seed": {s: {"old": coverage([r for r in rows if r["seed"] == s], "old_covered"),
                               "new": coverage([r for r in rows if r["seed"] == s], "new_covered")} for s in seeds},
              "per_task": per_task, "rows": rows,
              "notes": ["truth = mean over the held-out queries of cell-mean differences (its se is in truth_se)",
                        "svamp contains every mawps question: the tasks are not independent",
                        f"queries subsampled to {args.max_queries} per task for time (2 shared cores)",
                        "CausalDiagnosticWarnings of the fits are silenced (many coefficients for few query clusters)"]}
    out = Path(args.out or ROOT / "bench" / "results" / f"new_prompt_coverage_{datetime.date.today():%Y%m%d}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("old", "new", "mean_abs_error", "seconds")}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
