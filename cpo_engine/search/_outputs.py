"""Output files and report of the search stage of `cpo run` (see :mod:`cpo_engine.search.stage`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from cpo_engine.report import Interval, ReportData, write_report
from cpo_engine.search.beam import SearchResult
from cpo_engine.search.stage import SearchStageConfig, _Z95, _interval_of, lineage, uplift_vs, write_outputs

POLICY_LABELS = {"causal_lcb": "per-query, causal (LCB)", "causal_point": "per-query, causal (point)",
                 "non_causal": "per-query, non-causal"}


def assignment_table(reps: Any, pool: dict[str, Any], result: SearchResult | None, test: np.ndarray) -> pa.Table:
    """One row per query: its split, the pool choice and (generative mode) the searched prompt."""
    n_q = len(reps.query_ids)
    rows = np.arange(n_q)
    c = pool["choices"]["causal_lcb"]
    split = np.where(np.isin(rows, test), "test", "train")
    cols: dict[str, Any] = {
        "query_id": pa.array(reps.query_ids.astype(str)), "split": pa.array(split),
        "pool_prompt_id": pa.array(reps.prompt_ids.astype(str)[c]),
        "pool_effect": pa.array(pool["effect"][rows, c]), "pool_se": pa.array(pool["se"][rows, c])}
    if result is not None:
        top = result.topk_index[:, 0]
        ok = top >= 0
        cand = [result.candidates[i] if i >= 0 else None for i in top]
        cols.update(search_candidate_id=pa.array([x.id if x else None for x in cand]),
                    search_prompt_text=pa.array([x.text if x else None for x in cand]),
                    search_effect=pa.array(np.where(ok, result.topk_effect[:, 0], np.nan)),
                    search_se=pa.array(np.where(ok, result.topk_se[:, 0], np.nan)))
    return pa.table(cols)


def candidates_table(result: SearchResult, reps: Any, head: Any, static_index: int) -> pa.Table:
    """All candidates, ranked, with uplift over the best logged static prompt and its interval."""
    t = result.table()
    order = result.ranking()
    up, se = uplift_vs(head, reps.X, result.T[order], reps.T[static_index])
    t = t.append_column("uplift_vs_best_logged", pa.array(up)).append_column("uplift_se", pa.array(se))
    t = t.append_column("uplift_ci_low", pa.array(up - _Z95 * se)).append_column("uplift_ci_high", pa.array(up + _Z95 * se))
    return t.append_column("lineage", pa.array([lineage(result, int(i)) for i in order]))


def best_static(reps: Any, pool: dict[str, Any], cands: pa.Table | None) -> dict[str, Any]:
    """The best logged static prompt (train mean) and, if searched, the best generated static prompt."""
    s = pool["static_index"]
    out: dict[str, Any] = {"logged": {"prompt_id": str(reps.prompt_ids[s]), "text": reps.prompt_texts[s],
                                      "train_mean_score": float(pool["train_means"][s]),
                                      "held_out_mean_score": pool["evaluations"]["causal_lcb"].get("static_value")}}
    if cands is not None and cands.num_rows:
        r = cands.slice(0, 1).to_pylist()[0]
        out["search"] = {k: r[k] for k in ("id", "text", "lineage", "static_effect", "ci_low", "ci_high",
                                           "uplift_vs_best_logged", "uplift_ci_low", "uplift_ci_high", "mahalanobis")}
        out["search"]["note"] = ("predicted by the causal model (no LLM ran this prompt); uplift is vs the best "
                                 "logged static prompt, interval 95%")
    return out


def _finite_interval(v: np.ndarray) -> Interval | None:
    v = v[np.isfinite(v)]
    return _interval_of(v) if v.size >= 2 else None


def policy_values(reps: Any, pool: dict[str, Any], test: np.ndarray) -> dict[str, Interval]:
    """Held-out value of each evaluated policy and of the baselines, with intervals."""
    ev, Y, s = pool["evaluations"], pool["Y_test"], pool["static_index"]
    rows = np.arange(len(test))
    out = {POLICY_LABELS[k]: _finite_interval(Y[rows, c]) for k, c in pool["test_choices"].items()
           if "skipped" not in ev[k]}
    out[f"best static ({reps.prompt_ids[s]})"] = _finite_interval(Y[:, s])
    if "random_value" in ev["causal_lcb"]:
        out["random prompt"] = Interval(ev["causal_lcb"]["random_value"])
        out["oracle (peeks at outcomes)"] = Interval(ev["causal_lcb"]["oracle_value"])
    return {k: v for k, v in out.items() if v is not None}


def report_data(reps: Any, pool: dict[str, Any], head: Any, test: np.ndarray, cands: pa.Table | None,
                result: SearchResult | None, summary: dict[str, Any]) -> ReportData:
    """Assemble the report's sections from the stage's results."""
    values = policy_values(reps, pool, test)
    eff, se = uplift_vs(head, reps.X[test], reps.T, head.t_ref)
    effects = {str(p): Interval(e, e - _Z95 * s_, e + _Z95 * s_) for p, e, s_ in zip(reps.prompt_ids, eff, se)}
    measured = np.nanmean(pool["Y_test"], axis=0)
    nc = pool["non_causal_mean_effect"]
    labels = [str(p) for p in reps.prompt_ids]
    comparison = {"causal (DML)": (eff - eff.mean(), measured - measured.mean(), labels),
                  "non-causal (outcome model)": (nc - nc.mean(), measured - measured.mean(), labels)}
    top = [] if cands is None else [{k: r[k] for k in ("id", "text", "uplift_vs_best_logged", "uplift_ci_low",
                                                        "uplift_ci_high", "mahalanobis", "query_wins", "lineage")}
                                    for r in cands.slice(0, 15).to_pylist()]
    return ReportData(title="cpo run report", summary=summary, prompt_effects=effects, policy_values=values,
                      tiers=pool["tiers"], comparison=comparison, top_candidates=top,
                      trace=[] if result is None else result.trace, notes=findings(pool, reps))


def findings(pool: dict[str, Any], reps: Any) -> list[str]:
    """Plain-language findings: does the per-query choice beat the best static prompt?"""
    out = []
    s = str(reps.prompt_ids[pool["static_index"]])
    for key, ev in pool["evaluations"].items():
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


def assemble_outputs(run_dir: Path, table: pa.Table, reps: Any, cfg: SearchStageConfig, causal: Any,
                     pool: dict[str, Any], result: SearchResult | None, train: np.ndarray, test: np.ndarray,
                     timings: dict[str, float]) -> dict[str, Any]:
    """Write assignment, best static prompt, candidates, trace, pool evaluation, model and report."""
    from dataclasses import asdict

    from cpo_engine.causal import representation_provenance

    out = Path(run_dir) / "search"
    head = pool["head"]
    cands = None if result is None else candidates_table(result, reps, head, pool["static_index"])
    evaluation = {"static_prompt_id": str(reps.prompt_ids[pool["static_index"]]),
                  "incumbent_prompt_id": str(reps.prompt_ids[pool["incumbent_index"]]),
                  "static_rank_agreement": pool["static_rank_agreement"], "evaluations": pool["evaluations"],
                  "tiers": pool["tiers"], "n_train_queries": int(len(train)), "n_test_queries": int(len(test)),
                  "config": asdict(cfg), "timings_s": timings, "diagnostics": causal.diagnostics_.to_dict()}
    files: dict[str, Any] = {
        "assignment": ("assignment.parquet", assignment_table(reps, pool, result, test)),
        "best_static": ("best_static_prompt.json", best_static(reps, pool, cands)),
        "pool_evaluation": ("pool_evaluation.json", evaluation)}
    if result is not None:
        files["candidates"] = ("candidates.parquet", cands)
        files["top_candidates"] = ("top_candidates.json", cands.slice(0, 20).to_pylist())
        files["trace"] = ("search_trace.json", result.trace)
    paths = write_outputs(out, files)
    causal.save(out / "model", representation_provenance(reps))
    paths["model"] = out / "model"
    summary = {"queries (train / held-out)": f"{len(train)} / {len(test)}", "prompts": len(reps.prompt_ids),
               "training data": ("as logged" if cfg.simulate_confounding is None else
                                 f"simulated {cfg.simulate_confounding} confounding (strength "
                                 f"{cfg.confounding_strength}, {cfg.logged_per_query} rows per query)"),
               "selection": f"lower confidence bound, z = {cfg.z}", "trust region": cfg.trust_region,
               "effects measured from": (f"incumbent prompt '{reps.prompt_ids[pool['incumbent_index']]}'"
                                         if cfg.reference == "incumbent" else "mean logged prompt representation"),
               **{k: f"{v:.1f}" for k, v in timings.items()}}
    if result is not None:
        summary["candidates scored"] = len(result.candidates)
    data = report_data(reps, pool, head, test, cands, result, summary)
    data.diagnostics = causal.diagnostics_.summary()
    paths["report"] = write_report(run_dir, data)
    return {"paths": paths, "evaluation": evaluation, "result": result}


__all__ = ["assemble_outputs", "assignment_table", "candidates_table", "best_static", "report_data", "findings"]
