"""Nightly re-optimization: append the day's triplets, refit, re-search, compare, flag drift.

State folder layout (everything written atomically)::

    triplets/<date>.parquet     the triplets appended on each date (rerunning a date replaces it)
    cache/                      embedding cache: only texts never seen before are embedded
    runs/<date>/model/          the night's fitted causal reward model (when it passed the gate)
    runs/<date>/assignment.parquet   per-query chosen prompt, predicted effect and se
    runs/<date>/prompts.parquet      static (mean over queries) predicted effect of each prompt
    runs/<date>/report.json     diagnostics, gate verdict, comparison with the live run, drift flags
    current.json                the live run (its model and assignment); moved only by a passing fit

A fit that raises or fails the gate (diagnostics thresholds) leaves ``current.json`` alone: the
previous model stays live and the report says why. Drift compares the new search with the live
one: Kendall tau of the prompts' static effects, the share of queries whose chosen prompt changed,
and the change of predicted uplift (per-query policy over the best static prompt).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cpo_engine.exceptions import DataError
from cpo_engine.utils import atomic_write_json, atomic_write_parquet
from cpo_engine.workflows.common import Representer, scores_and_weights
from cpo_engine.workflows.config import DriftConfig, GateConfig, NightlyConfig

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------- data


def read_new(path: str | Path) -> pa.Table:
    """Today's triplets: a `cpo generate` run folder (error-free rows) or any triplet table."""
    from cpo_engine.data import read_triplets, validate_triplets

    path = Path(path)
    if (path / "manifest.json").is_file():
        from cpo_engine.generation.store import read_generated

        table = read_generated(path, drop_errors=True)
        return validate_triplets(table.drop_columns(["generated_at"]), source=str(path))
    return read_triplets(path)


def append_triplets(state: Path, new: str | Path, date: str) -> Path:
    """Write tonight's triplets as ``triplets/<date>.parquet`` (idempotent for a rerun of a date)."""
    table = read_new(new)
    if table.num_rows == 0:
        raise DataError("no usable triplets to append", source=str(new), fix="check the generation errors")
    table = table.append_column("nightly_date", pa.array([date] * table.num_rows, pa.string()))
    return atomic_write_parquet(table, state / "triplets" / f"{date}.parquet")


def load_window(state: Path, window_days: int | None) -> tuple[pa.Table, list[str]]:
    """Triplets of the last ``window_days`` dates (all when None), with the dates used."""
    files = sorted((state / "triplets").glob("*.parquet"))
    if window_days is not None:
        files = files[-window_days:]
    if not files:
        raise DataError("no triplets in the nightly state", source=str(state / "triplets"),
                        fix="pass --new with today's triplets")
    tables = [pq.read_table(f) for f in files]
    common = [c for c in tables[0].column_names if all(c in t.column_names for t in tables)]
    table = pa.concat_tables([t.select(common) for t in tables], promote_options="permissive")
    return table, [f.stem for f in files]


# ---------------------------------------------------------------------------------- fit + gate


def fit_night(table: pa.Table, cfg: NightlyConfig, state: Path, representer: Representer | None = None) -> tuple[Any, Any]:
    """Representations through the persistent embedding cache (state/cache), then the causal model, with
    the same configuration sections (embed, pca, causal) and defaults as `cpo run`."""
    import warnings

    rep = representer or Representer(cfg.embed, cache_dir=state / "cache")
    reps = rep.represent(table, cfg.pca, show_progress=False)
    y, w = scores_and_weights(table)
    model = cfg.causal.make_model(device=cfg.device, random_state=cfg.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # every warning is kept in model.diagnostics_.warnings
        model.fit(y, reps.T[reps.row_prompt], X=reps.X[reps.row_query], groups=reps.row_query, sample_weight=w)
    return reps, model


def gate_problems(model: Any, gate: GateConfig) -> list[str]:
    """Why a fitted model must not go live (empty: it may)."""
    d = model.diagnostics_
    problems = []
    head = model.linear_head()
    if not (np.all(np.isfinite(head.coef)) and np.all(np.isfinite(head.cov))):
        problems.append("non-finite coefficients or covariance")
    if d.ess_share < gate.min_ess_share:
        problems.append(f"effective sample share {d.ess_share:.3f} < {gate.min_ess_share}")
    if not math.isfinite(d.gram_condition) or d.gram_condition > gate.max_condition:
        problems.append(f"final-stage condition number {d.gram_condition:.3g} > {gate.max_condition:.3g}")
    if d.overlap and min(d.overlap) < gate.min_overlap:
        problems.append(f"overlap {min(d.overlap):.3f} < {gate.min_overlap}")
    if gate.fail_on_warnings and d.warnings:
        problems.extend(f"warning: {w}" for w in d.warnings)
    return problems


# ------------------------------------------------------------------------------ search + compare


def pool_search(reps: Any, model: Any, cfg: NightlyConfig) -> tuple[pa.Table, pa.Table]:
    """Per-query best prompt among the logged ones (the selection rule of `cpo run`: same reference,
    trust region and z), and each prompt's static effect (no LLM call)."""
    from cpo_engine.search import CandidateScorer, pool_assign, referenced_head

    def no_new_texts(texts: Any) -> np.ndarray:
        raise DataError("nightly scores only the logged prompts (their representations are known)")

    head, _ = referenced_head(model.linear_head(), reps.X, reps.T, cfg.selection.reference)
    scorer = CandidateScorer.from_selection(head, reps.X, no_new_texts, cfg.selection, reps.T, device="cpu")
    pool = pool_assign(scorer, [str(p) for p in reps.prompt_ids], list(reps.prompt_texts), T_pool=reps.T)
    assignment = pool.assignment_table(reps.query_ids).rename_columns(
        ["query_id", "prompt_id", "effect", "se", "source"])
    prompts = pa.table({"prompt_id": pool.prompt_ids, "static_effect": pool.effect.mean(axis=0),
                        "static_se": pool.se.mean(axis=0)})
    return assignment, prompts


def predicted_uplift(assignment: pa.Table, prompts: pa.Table) -> float:
    """Mean predicted gain of the per-query choice over the best static prompt."""
    static_best = float(np.max(prompts.column("static_effect").to_numpy()))
    return float(np.mean(assignment.column("effect").to_numpy())) - static_best


def compare(prev_dir: Path, assignment: pa.Table, prompts: pa.Table, drift: DriftConfig) -> dict[str, Any]:
    """Kendall tau of static effects, share of changed choices, uplift change, and the drift flags."""
    from scipy.stats import kendalltau

    prev_a = pq.read_table(prev_dir / "assignment.parquet")
    prev_p = pq.read_table(prev_dir / "prompts.parquet")
    old = dict(zip(prev_p.column("prompt_id").to_pylist(), prev_p.column("static_effect").to_pylist()))
    new = dict(zip(prompts.column("prompt_id").to_pylist(), prompts.column("static_effect").to_pylist()))
    common = sorted(set(old) & set(new))
    tau = float(kendalltau([old[p] for p in common], [new[p] for p in common]).statistic) if len(common) >= 3 else None
    old_q = dict(zip(prev_a.column("query_id").to_pylist(), prev_a.column("prompt_id").to_pylist()))
    new_q = dict(zip(assignment.column("query_id").to_pylist(), assignment.column("prompt_id").to_pylist()))
    shared = set(old_q) & set(new_q)
    changed = sum(old_q[q] != new_q[q] for q in shared) / len(shared) if shared else None
    up_old, up_new = predicted_uplift(prev_a, prev_p), predicted_uplift(assignment, prompts)
    flags = []
    if tau is not None and (math.isnan(tau) or tau < drift.min_kendall_tau):
        flags.append(f"prompt ranking moved: Kendall tau {tau:.3f} < {drift.min_kendall_tau}")
    if changed is not None and changed > drift.max_changed_share:
        flags.append(f"{changed:.1%} of queries changed prompt (> {drift.max_changed_share:.0%})")
    if abs(up_new - up_old) > drift.max_uplift_change:
        flags.append(f"predicted uplift moved {up_old:+.4f} -> {up_new:+.4f} (> {drift.max_uplift_change})")
    return {"previous_run": str(prev_dir), "kendall_tau": tau, "common_prompts": len(common),
            "changed_share": changed, "common_queries": len(shared), "uplift_previous": up_old,
            "uplift_new": up_new, "drift": bool(flags), "drift_reasons": flags}


# ------------------------------------------------------------------------------------------ run


def run_nightly(cfg: NightlyConfig, representer: Representer | None = None) -> dict[str, Any]:
    """One night: append -> refit (cached embeddings) -> gate -> search -> compare -> report."""
    state = Path(cfg.state)
    date = cfg.date or time.strftime("%Y-%m-%d", time.gmtime())
    run_dir = state / "runs" / date
    report: dict[str, Any] = {"date": date, "config": asdict(cfg), "started_at": _now()}
    if cfg.new:
        report["appended"] = str(append_triplets(state, cfg.new, date))
    table, dates = load_window(state, cfg.window_days)
    report.update(rows=table.num_rows, dates=dates)
    current = _read_current(state)
    try:
        reps, model = fit_night(table, cfg, state, representer)
        problems = gate_problems(model, cfg.gate)
        report["diagnostics"] = model.diagnostics_.to_dict()
    except Exception as exc:  # noqa: BLE001 - a failed fit keeps the previous model live
        log.exception("nightly fit failed")
        problems, model = [f"fit failed: {type(exc).__name__}: {exc}"], None
    report["gate_problems"] = problems
    if problems:
        report["model_status"] = "kept_previous" if current else "no_model"
        report["live_run"] = current.get("run") if current else None
        return _finish(run_dir, report)
    assignment, prompts = pool_search(reps, model, cfg)
    model.save(run_dir / "model", {"dates": dates, "rows": table.num_rows})
    atomic_write_parquet(assignment, run_dir / "assignment.parquet")
    atomic_write_parquet(prompts, run_dir / "prompts.parquet")
    report["predicted_uplift"] = predicted_uplift(assignment, prompts)
    report["best_static_prompt"] = prompts.column("prompt_id")[int(np.argmax(prompts["static_effect"]))].as_py()
    prev = state / current["run"] if current else None
    report["comparison"] = compare(prev, assignment, prompts, cfg.drift) if prev and prev != run_dir else None
    report["model_status"] = "updated"
    atomic_write_json(state / "current.json", {"date": date, "run": str(run_dir.relative_to(state))})
    report["live_run"] = str(run_dir.relative_to(state))
    return _finish(run_dir, report)


def _read_current(state: Path) -> dict[str, Any]:
    path = state / "current.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _finish(run_dir: Path, report: dict[str, Any]) -> dict[str, Any]:
    report["finished_at"] = _now()
    atomic_write_json(run_dir / "report.json", report)
    return report


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


__all__ = ["run_nightly", "append_triplets", "load_window",
           "gate_problems", "pool_search", "compare", "predicted_uplift"]
