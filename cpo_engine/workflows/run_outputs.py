"""Output files and report of `cpo run` (see :mod:`cpo_engine.workflows.run`)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import pyarrow as pa

from cpo_engine.report import Interval, ReportData, write_report
from cpo_engine.utils import atomic_write_json, atomic_write_parquet
from cpo_engine.workflows.run import POLICY_LABELS, PoolResult

_Z95 = NormalDist().inv_cdf(0.975)


def _interval_of(values: np.ndarray) -> Interval | None:
    from cpo_engine.search import paired_interval

    v = values[np.isfinite(values)]
    if v.size < 2:
        return None
    r = paired_interval(v, np.zeros_like(v))
    return Interval(r["diff"], r["ci_low"], r["ci_high"])


def assignment_table(reps: Any, pool: PoolResult, result: Any, test: np.ndarray) -> pa.Table:
    """One row per query: its split, the pool choice and (generative mode) the searched prompt."""
    t = pool.policy.assignment_table(reps.query_ids, reps.prompt_texts)
    split = np.where(np.isin(np.arange(len(reps.query_ids)), test), "test", "train")
    t = t.add_column(1, "split", pa.array(split))
    if result is not None:
        top = result.topk_index[:, 0]
        ok = top >= 0
        cand = [result.candidates[i] if i >= 0 else None for i in top]
        t = (t.append_column("search_candidate_id", pa.array([x.id if x else None for x in cand]))
             .append_column("search_prompt_text", pa.array([x.text if x else None for x in cand]))
             .append_column("search_effect", pa.array(np.where(ok, result.topk_effect[:, 0], np.nan)))
             .append_column("search_se", pa.array(np.where(ok, result.topk_se[:, 0], np.nan))))
    return t


def candidates_table(result: Any, X: np.ndarray, T_static: np.ndarray, head: Any) -> pa.Table:
    """All candidates, ranked, with uplift over the best logged static prompt and its interval."""
    t = result.table()
    order = result.ranking()
    est = head.estimate_head()  # the held-out half when selection is honest: the ranking never saw it
    eff, eff_se = est.static_effect(X, result.T[order])
    for name, col in (("static_effect", eff), ("static_se", eff_se), ("ci_low", eff - _Z95 * eff_se),
                      ("ci_high", eff + _Z95 * eff_se)):
        t = t.set_column(t.column_names.index(name), name, pa.array(col))
    up, se = est.static_effect(X, result.T[order], T_static)
    t = t.append_column("uplift_vs_best_logged", pa.array(up)).append_column("uplift_se", pa.array(se))
    t = t.append_column("uplift_ci_low", pa.array(up - _Z95 * se)).append_column("uplift_ci_high", pa.array(up + _Z95 * se))
    return t.append_column("lineage", pa.array([result.lineage(int(i)) for i in order]))


def best_static(reps: Any, pool: PoolResult, cands: pa.Table | None) -> dict[str, Any]:
    """The best logged static prompt (train mean) and, if searched, the best generated static prompt."""
    s = pool.static_index
    out: dict[str, Any] = {"logged": {"prompt_id": str(reps.prompt_ids[s]), "text": reps.prompt_texts[s],
                                      "train_mean_score": float(pool.train_means[s]),
                                      "held_out_mean_score": pool.evaluations["causal_lcb"].get("static_value")}}
    if cands is not None and cands.num_rows:
        r = cands.slice(0, 1).to_pylist()[0]
        out["search"] = {k: r[k] for k in ("id", "text", "lineage", "static_effect", "ci_low", "ci_high",
                                           "uplift_vs_best_logged", "uplift_ci_low", "uplift_ci_high", "mahalanobis")}
        out["search"]["note"] = ("predicted by the causal model (no LLM ran this prompt); uplift is vs the best "
                                 "logged static prompt, interval 95%; " + pool.policy.estimate)
    return out


def policy_values(reps: Any, pool: PoolResult) -> dict[str, Interval]:
    """Held-out value of each evaluated policy and of the baselines, with intervals."""
    ev, Y, s = pool.evaluations, pool.Y_test, pool.static_index
    rows = np.arange(Y.shape[0])
    out = {POLICY_LABELS[k]: _interval_of(Y[rows, c]) for k, c in pool.test_choices.items() if "skipped" not in ev[k]}
    out[f"best static ({reps.prompt_ids[s]})"] = _interval_of(Y[:, s])
    if "random_value" in ev["causal_lcb"]:
        out["random prompt"] = Interval(ev["causal_lcb"]["random_value"])
        out["oracle (peeks at outcomes)"] = Interval(ev["causal_lcb"]["oracle_value"])
    return {k: v for k, v in out.items() if v is not None}


def report_data(reps: Any, pool: PoolResult, test: np.ndarray, cands: pa.Table | None, result: Any,
                summary: dict[str, Any]) -> ReportData:
    """Assemble the report's sections from the run's results."""
    head = pool.head
    eff, se = head.static_effect(reps.X[test], reps.T)
    effects = {str(p): Interval(e, e - _Z95 * s_, e + _Z95 * s_) for p, e, s_ in zip(reps.prompt_ids, eff, se)}
    measured = np.nanmean(pool.Y_test, axis=0)
    nc = pool.non_causal_mean_effect
    labels = [str(p) for p in reps.prompt_ids]
    comparison = {"causal (DML)": (eff - eff.mean(), measured - measured.mean(), labels),
                  "non-causal (outcome model)": (nc - nc.mean(), measured - measured.mean(), labels)}
    top = [] if cands is None else [{k: r[k] for k in ("id", "text", "uplift_vs_best_logged", "uplift_ci_low",
                                                        "uplift_ci_high", "mahalanobis", "query_wins", "lineage")}
                                    for r in cands.slice(0, 15).to_pylist()]
    return ReportData(title="cpo run report", summary=summary, prompt_effects=effects,
                      policy_values=policy_values(reps, pool), tiers=pool.tiers, comparison=comparison,
                      top_candidates=top, trace=[] if result is None else result.trace, notes=findings(pool, reps))


def findings(pool: PoolResult, reps: Any) -> list[str]:
    """Plain-language findings: does the per-query choice beat the best static prompt?"""
    out = []
    s = str(reps.prompt_ids[pool.static_index])
    for key, ev in pool.evaluations.items():
        if "skipped" in ev:
            out.append(f"{POLICY_LABELS[key]}: not evaluated on held-out outcomes ({ev['skipped']}).")
            continue
        d = ev["vs_static"]
        verdict = ("wins" if d["ci_low"] > 0 else "loses" if d["ci_high"] < 0 else "is not distinguishable")
        out.append(f"{POLICY_LABELS[key]}: held-out value {ev['policy_value']:.4f} vs best static prompt '{s}' "
                   f"{ev['static_value']:.4f}; difference {d['diff']:+.4f} (95% CI {d['ci_low']:+.4f} to "
                   f"{d['ci_high']:+.4f}, {d['n']} queries): it {verdict}; it departs from the static prompt on "
                   f"{ev['share_not_static']:.0%} of queries.")
    return out


def write_run_outputs(run_dir: Path, reps: Any, cfg: Any, causal: Any, pool: PoolResult, result: Any,
                      train: np.ndarray, test: np.ndarray,
                      timings: dict[str, float]) -> tuple[dict[str, Any], dict[str, Path]]:
    """Write assignment, best static prompt, candidates, trace, pool evaluation and report."""
    out = Path(run_dir) / "search"
    cands = None if result is None else candidates_table(result, reps.X, reps.T[pool.static_index], pool.head)
    evaluation = {"static_prompt_id": str(reps.prompt_ids[pool.static_index]),
                  "incumbent_prompt_id": str(reps.prompt_ids[pool.incumbent_index]),
                  "static_rank_agreement": pool.static_rank_agreement, "evaluations": pool.evaluations,
                  "tiers": pool.tiers, "n_train_queries": int(len(train)), "n_test_queries": int(len(test)),
                  "config": asdict(cfg), "timings_s": timings, "diagnostics": causal.diagnostics_.to_dict()}
    files: dict[str, tuple[str, Any]] = {
        "assignment": ("assignment.parquet", assignment_table(reps, pool, result, test)),
        "best_static": ("best_static_prompt.json", best_static(reps, pool, cands)),
        "pool_evaluation": ("pool_evaluation.json", evaluation)}
    if result is not None:
        files["candidates"] = ("candidates.parquet", cands)
        files["top_candidates"] = ("top_candidates.json", cands.slice(0, 20).to_pylist())
        files["trace"] = ("search_trace.json", result.trace)
    paths = {}
    for key, (name, obj) in files.items():
        paths[key] = out / name
        (atomic_write_parquet if isinstance(obj, pa.Table) else _write_json)(obj, paths[key])
    s, h = cfg.selection, cfg.holdout
    summary = {"queries (train / held-out)": f"{len(train)} / {len(test)}", "prompts": len(reps.prompt_ids),
               "training data": ("as logged" if h.simulate_confounding is None else
                                 f"simulated {h.simulate_confounding} confounding (strength "
                                 f"{h.confounding_strength}, {h.logged_per_query} rows per query)"),
               "selection": (f"lower confidence bound, z = {s.z}" + (" (simultaneous over prompts)" if s.simultaneous
                                                                        else " (one prompt at a time)")),
               "reported uplift of chosen prompts": pool.policy.estimate, "trust region": s.trust_region,
               "effects measured from": (f"incumbent prompt '{reps.prompt_ids[pool.incumbent_index]}'"
                                         if s.reference == "incumbent" else "mean logged prompt representation"),
               **{f"{k} (s)": f"{v:.1f}" for k, v in timings.items()}}
    if result is not None:
        summary["candidates scored"] = len(result.candidates)
    data = report_data(reps, pool, test, cands, result, summary)
    data.diagnostics = causal.diagnostics_.summary()
    paths["report"] = write_report(run_dir, data)
    return evaluation, paths


def _write_json(obj: Any, path: Path) -> Path:
    return atomic_write_json(path, obj)


def print_findings(evaluation: dict[str, Any], result: Any, paths: dict[str, Path]) -> None:
    """Console summary: pool-mode findings, best searched prompt, report path."""
    warnings = evaluation.get("diagnostics", {}).get("warnings", [])
    print("causal model diagnostics: " + ("; ".join(warnings) if warnings else "no warnings"))
    print(f"pool mode on {evaluation['n_test_queries']} held-out queries "
          f"(best static prompt: {evaluation['static_prompt_id']}):")
    for key, e in evaluation["evaluations"].items():
        if "skipped" in e:
            print(f"  {POLICY_LABELS[key]:<28} not evaluated: {e['skipped']}")
            continue
        d = e["vs_static"]
        print(f"  {POLICY_LABELS[key]:<28} value {e['policy_value']:.4f} vs static {e['static_value']:.4f}: "
              f"{d['diff']:+.4f} (95% CI {d['ci_low']:+.4f} to {d['ci_high']:+.4f})")
    if result is not None:
        best = result.candidates[result.best_static]
        print(f"generative search: {len(result.candidates)} candidates scored; best static: {best.text!r}")
    print(f"report: {paths['report']}")


__all__ = ["write_run_outputs", "assignment_table", "candidates_table", "best_static", "report_data", "findings",
           "print_findings"]
