"""Output files and report of `cpo run` (see :mod:`cpo_engine.workflows.run`).

The run's answer is its policy (:class:`~cpo_engine.policy.policy.Policy`, saved beside the model
bundle): ``search/assignment.parquet`` holds its one recommendation per query (the same rule `cpo
assign` applies to new queries), the report and ``summary.json`` say what to do and how sure the run
is, from the held-out evaluation of pool mode.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from statistics import NormalDist
from typing import Any, TYPE_CHECKING

import numpy as np
import pyarrow as pa

from cpo_engine.causal.evidence import ESTIMATED, PREDICTED, format_difference, is_no_difference
from cpo_engine.causal.policy_values import LOGGING, format_policy_values
from cpo_engine.data.grid import nan_mean
from cpo_engine.report import SECTIONS_FILE, Column, Interval, ReportData, Table, write_report
from cpo_engine.utils import atomic_write_json, atomic_write_parquet
from cpo_engine.policy.policy import Policy, learn_state, searched_candidates_sha256, searched_from_result
from cpo_engine.workflows.run_types import POLICY_LABELS, PoolResult

if TYPE_CHECKING:
    from cpo_engine.search.beam import SearchResult
    from cpo_engine.settings import RunConfig
    from cpo_engine.causal.dml import CausalRewardModel
    from cpo_engine.causal.head import LinearHead
    from cpo_engine.embedding.representations import Representations

_Z95 = NormalDist().inv_cdf(0.975)

GLOSSARY = {
    "static prompt": "One prompt used for every query. The static prompt of the policy is the logged prompt the "
                     "causal model ranks best on average over the training queries; the best static prompt of the "
                     "held-out check is the one with the best mean recorded score on the training queries (usually "
                     "the same).",
    "per-query choice": "A prompt chosen for each query by the causal model from the query's text.",
    "effect": "The predicted change in a query's expected score when its prompt is switched from the static prompt to "
              "another (score units: +0.05 on 0/1 scores is 5 more correct answers per 100 queries).",
    "lower confidence bound (LCB)": "effect - z x standard error (z: the run's selection.z). A query leaves the "
                                    "static prompt only when this bound is above 0.",
    "95% CI": "95% confidence interval: the range the true value lies in with 95% confidence.",
    "held-out queries": "Queries set aside before fitting (never seen by the model); their recorded outcomes score "
                        "the choices.",
    "logging policy (as logged)": "How prompts were chosen in the logs; its value is each held-out query's mean "
                                  "logged score (over the rows logged for it), averaged over the queries. One "
                                  "definition, used everywhere on this page.",
    "same as the static prompt (no departures)": "A policy that chose the static prompt for every query: its "
                                                 "difference from it is 0 by construction, so no interval is shown.",
    "difficulty": "Of a held-out query: 1 - its mean recorded score over all logged prompts (0: every prompt "
                  "solved it, 1: none did). Tiers split the held-out queries into equal-sized groups by difficulty.",
    "verified": "An LLM ran the prompt and its outcomes were recorded (logged prompts). Searched candidates are "
                "model predictions only until an LLM runs them.",
    "trust region": "Candidates whose representation lies far from every logged prompt are excluded: the model "
                    "cannot predict them.",
}


def glossary(selection: Any) -> dict[str, str]:
    """:data:`GLOSSARY` with the lower bound's multiplier of the run's selection rule (``selection.z``, whose
    one default is :class:`~cpo_engine.search.config.SelectionConfig`'s)."""
    z = selection.z
    level = f"one-sided {NormalDist().cdf(z):.0%}" if z > 0 else "the point estimate"
    lcb = (f"effect - z x standard error (selection.z = {z:g}: {level}"
           + ("; simultaneous over the prompts, so the multiplier is larger" if selection.simultaneous and z > 0
              else "") + "). A query leaves the static prompt only when this bound is above 0.")
    return GLOSSARY | {"lower confidence bound (LCB)": lcb}


def _interval_of(values: np.ndarray) -> Interval | None:
    from cpo_engine.search import paired_interval

    v = values[np.isfinite(values)]
    if v.size < 2:
        return None
    r = paired_interval(v, np.zeros_like(v))
    return Interval(r["diff"], r["ci_low"], r["ci_high"])


def make_policy(run_dir: Path, reps: Representations, cfg: RunConfig, causal: CausalRewardModel, pool: PoolResult,
                result: SearchResult | None,
                train: np.ndarray) -> Policy:
    """The run's policy (:func:`write_run_outputs` saves it as ``model/policy.json``, with the hash of the
    searched candidates): the one that made the pool choice (``pool.run_policy``), or, when
    ``policy.candidates='searched'``, the same state with the searched candidates competing too."""
    policy = pool.run_policy
    if policy is None:  # a PoolResult built without its policy
        state = learn_state(causal, reps.X[train], reps.prompt_ids, reps.prompt_texts, reps.T, pool.train_means,
                            cfg.selection, static_choice=pool.static_choice, X_queries=reps.X)
        policy = Policy(causal, state, cfg.policy, device="cpu")
        policy.warn()
    if result is not None and cfg.policy.candidates == "searched":
        searched = searched_from_result(result, reps.prompt_texts, cfg.policy.max_searched)
        policy = Policy(causal, policy.state, cfg.policy, searched=searched, device="cpu")
    policy.source = str(Path(run_dir) / "model")
    return policy


def assignment_table(policy: Policy, reps: Representations, test: np.ndarray, chosen: Any = None) -> pa.Table:
    """One row per query of the run: its split and the policy's one recommendation with its evidence.

    ``chosen``: the policy's choice already made for every query (``PoolResult.policy``, the choice the
    held-out evaluation scored); without it the policy chooses here."""
    t = policy.assignment(policy.choose(reps.X) if chosen is None else chosen, reps.query_ids)
    split = np.where(np.isin(np.arange(len(reps.query_ids)), test), "test", "train")
    return t.add_column(1, "split", pa.array(split))


def held_out_choices(reps: Representations, pool: PoolResult, test: np.ndarray) -> pa.Table:
    """The held-out evaluation's per-query choices (``search/held_out_choices.parquet``): one row per held-out
    query, the prompt each evaluated policy chose for it and the best static prompt it is compared with."""
    ids = np.asarray([str(p) for p in reps.prompt_ids], dtype=object)
    cols = {"query_id": pa.array([str(reps.query_ids[i]) for i in test], pa.string())}
    for key, choice in pool.test_choices.items():
        cols[key] = pa.array(ids[np.asarray(choice, dtype=np.int64)].tolist(), pa.string())
    cols["static_prompt_id"] = pa.array([str(reps.prompt_ids[pool.static_index])] * len(test), pa.string())
    return pa.table(cols)


def candidates_table(result: SearchResult, X: np.ndarray, T_static: np.ndarray, head: LinearHead,
                     uplift_bounds: tuple[float, float] | None = None) -> pa.Table:
    """All candidates, ranked, with uplift over the best logged static prompt and its interval (kept inside
    ``uplift_bounds``, the range an uplift can take on the score's scale, when given: a linear head
    extrapolates past it far from the logged prompts)."""
    t = result.table()
    order = result.ranking()
    est = head.estimate_head()  # the held-out half when selection is honest: the ranking never saw it
    eff, eff_se = est.static_effect(X, result.T[order])
    for name, col in (("static_effect", eff), ("static_se", eff_se), ("ci_low", eff - _Z95 * eff_se),
                      ("ci_high", eff + _Z95 * eff_se)):
        t = t.set_column(t.column_names.index(name), name, pa.array(col))
    up, se = est.static_effect(X, result.T[order], T_static)
    lo, hi = up - _Z95 * se, up + _Z95 * se
    if uplift_bounds is not None:
        up, lo, hi = (np.clip(v, *uplift_bounds) for v in (up, lo, hi))
    t = t.append_column("uplift_vs_best_logged", pa.array(up)).append_column("uplift_se", pa.array(se))
    t = t.append_column("uplift_ci_low", pa.array(lo)).append_column("uplift_ci_high", pa.array(hi))
    return t.append_column("lineage", pa.array([result.lineage(int(i)) for i in order]))


def best_static(reps: Representations, pool: PoolResult, cands: pa.Table | None) -> dict[str, Any]:
    """The best logged static prompt (train mean) and, if searched, the best generated static prompt."""
    s = pool.static_index
    out: dict[str, Any] = {"logged": {"prompt_id": str(reps.prompt_ids[s]), "text": reps.prompt_texts[s],
                                      "train_mean_score": float(pool.train_means[s]),
                                      "held_out_mean_score": pool.evaluations["causal_lcb"].get("static_value")}}
    if pool.static_choice is not None:
        out["logged"]["choice"] = pool.static_choice.to_dict()
    if cands is not None and cands.num_rows:
        r = cands.slice(0, 1).to_pylist()[0]
        out["search"] = {k: r[k] for k in ("id", "text", "lineage", "static_effect", "ci_low", "ci_high",
                                           "uplift_vs_best_logged", "uplift_ci_low", "uplift_ci_high", "mahalanobis")}
        out["search"]["note"] = ("predicted by the causal model (no LLM ran this prompt); uplift is vs the best "
                                 "logged static prompt, interval 95%; " + pool.policy.estimate)
        out["search"]["evidence"] = PREDICTED
    return out


# ------------------------------------------------------------------------------ held-out numbers


def held_out(reps: Representations, pool: PoolResult) -> dict[str, Any]:
    """Held-out values of every policy and baseline, with paired differences vs the best static prompt
    (the numbers of the README's measured table and the report's headline)."""
    from cpo_engine.search import paired_interval

    s, Y = pool.static_index, pool.Y_test
    out: dict[str, Any] = {"n_queries": int(Y.shape[0]),
                           "static_prompt": {"id": str(reps.prompt_ids[s]), "text": reps.prompt_texts[s]},
                           "policies": {}}
    for key, ev in pool.evaluations.items():
        if "skipped" in ev:
            out["policies"][key] = {"label": POLICY_LABELS[key], "skipped": ev["skipped"]}
            continue
        d = ev["vs_static"]
        out["policies"][key] = {"label": POLICY_LABELS[key], "value": ev["policy_value"], "diff": d["diff"],
                                "ci_low": d["ci_low"], "ci_high": d["ci_high"], "n": d["n"],
                                "share_not_static": ev["share_not_static"]}
        out["static_prompt"]["value"] = ev["static_value"]
        out.update(random_value=ev["random_value"], oracle_value=ev["oracle_value"])
    if pool.static_choice is not None:
        out["static_prompt"]["choice"] = pool.static_choice.to_dict()
    pv = pool.policy_values
    if pv is not None:
        name = pv.static_name
        if not np.isfinite(Y).all() and name in pv.estimates:
            # observational logs: the held-out queries' cells are mostly unobserved, so a mean over the queries
            # where the static prompt happened to be logged would be a selected subset; the off-policy values
            # cover every held-out query
            e = pv.estimates[name]
            out["static_prompt"].update(value=e.value, ci_low=e.ci_low, ci_high=e.ci_high, kind=pv.evidence)
        d = pv.vs_logging.get(name)
        if LOGGING in pv.estimates and d is not None:
            # one definition of the logging policy's value on every page (the policy values' own: each held-out
            # query's mean logged score, averaged over queries); a mean of cell means weighted each logged prompt
            # equally and gave a second, slightly different number beside it
            out["logging_policy"] = {"value": pv.estimates[LOGGING].value, "static_minus_logging": d["diff"],
                                     "ci_low": d["ci_low"], "ci_high": d["ci_high"], "kind": pv.evidence}
            return out
        if not np.isfinite(Y).all():
            return out
    logging_ = nan_mean(Y, axis=1)
    ok = np.isfinite(logging_) & np.isfinite(Y[:, s])
    if ok.sum() >= 2:
        d = paired_interval(Y[ok, s], logging_[ok])
        out["logging_policy"] = {"value": float(logging_[ok].mean()), "static_minus_logging": d["diff"],
                                 "ci_low": d["ci_low"], "ci_high": d["ci_high"]}
    return out


def recommendation(policy: Policy, assignment: pa.Table, ho: dict[str, Any], cands: pa.Table | None) -> dict[str, Any]:
    """What to do, in words and numbers: the headline of the report and of summary.json."""
    static, text = policy.static_prompt_id, policy.static_prompt_text
    counts = Counter(assignment.column("recommended_prompt_id").to_pylist())
    n = assignment.num_rows
    share = 1.0 - counts.get(static, 0) / n if n else 0.0
    others = [(p, c / n) for p, c in counts.most_common() if p != static]
    if policy.fallback or not others:
        headline = f"Use '{static}' (\"{text}\") for every query."
    else:
        listed = ", ".join(f"'{p}' on {_pct(sh)}" for p, sh in others[:4]) + (", ..." if len(others) > 4 else "")
        headline = (f"Use '{static}' (\"{text}\") for {_pct(1 - share)} of queries; for the other {_pct(share)} the "
                    f"per-query choice is predicted to do better: {listed}.")
    details = _how_sure(ho)
    choice = ho.get("static_prompt", {}).get("choice")
    if choice is not None:
        details.insert(0, choice["sentence"])
    if policy.fallback:
        details.insert(0, "The data are too small or too noisy to learn a per-query policy ("
                       + "; ".join(policy.problems) + "), so every query gets the static prompt.")
    elif not others:
        details.insert(0, "The causal model found no query where another prompt is confidently better "
                          "(lower confidence bound above 0).")
    details += searched_suggestion(cands)
    return {"headline": headline, "details": details, "static_prompt_id": static, "static_prompt_text": text,
            "share_departing": share, "prompt_shares": {p: c / n for p, c in counts.most_common()},
            "fallback": policy.fallback, "problems": policy.problems}


def searched_suggestion(cands: pa.Table | None) -> list[str]:
    """The first screen's line on the search: the best-ranked searched prompt whose 95% interval allows a gain
    over the best logged static prompt (upper bound above 0), or that none does. A prompt predicted to be
    worse is never suggested, however it ranks."""
    new = [] if cands is None else [r for r in cands.select(
        ["text", "round", "in_support", "uplift_vs_best_logged", "uplift_ci_low", "uplift_ci_high"]).to_pylist()
        if r["round"] > 0 and r["in_support"]]  # generated, not a logged seed; ranked best first
    if not new:
        return []
    b = next((r for r in new if np.isfinite(r["uplift_ci_high"]) and r["uplift_ci_high"] > 0), None)
    if b is None:
        return [f"No searched prompt is suggested: none of the {len(new):,} searched prompts in the trust region "
                "has a 95% interval that allows a gain over the best logged static prompt."]
    return [f"Best searched prompt (unverified: no LLM has run it): \"{b['text']}\", predicted "
            f"{b['uplift_vs_best_logged']:+.4f} over the best logged static prompt (95% CI {b['uplift_ci_low']:+.4f} "
            f"to {b['uplift_ci_high']:+.4f}). Run it with an LLM on a sample of queries before using it."]


def _how_sure(ho: dict[str, Any]) -> list[str]:
    out = []
    lcb, s = ho["policies"].get("causal_lcb", {}), ho["static_prompt"]
    if "value" in lcb:
        verdict = ("a measured gain" if lcb["ci_low"] > 0 else "a measured loss" if lcb["ci_high"] < 0 else
                   "not distinguishable from the static prompt")
        diff = format_difference(lcb["diff"], lcb["ci_low"], lcb["ci_high"])
        if is_no_difference(lcb["diff"], lcb["ci_low"], lcb["ci_high"]):
            verdict = "it chose the static prompt for every held-out query"
        out.append(f"On {lcb['n']:,} held-out queries the per-query choice scored {lcb['value']:.4f} against "
                   f"{s['value']:.4f} for the best static prompt '{s['id']}': {diff}, {verdict}.")
    elif "skipped" in lcb:
        out.append(f"The per-query choice could not be checked on held-out outcomes: {lcb['skipped']}")
    lg = ho.get("logging_policy")
    if lg:
        how = ", estimated off-policy on the held-out logs" if lg.get("kind") == ESTIMATED else ""
        out.append(f"The {LOGGING} scored {lg['value']:.4f}; the best static "
                   f"prompt '{s['id']}' is {lg['static_minus_logging']:+.4f} better (95% CI {lg['ci_low']:+.4f} to "
                   f"{lg['ci_high']:+.4f}{how}).")
    return out


def _pct(x: float) -> str:
    return f"{x:.0%}" if x >= 0.01 or x == 0 else "<1%"


# ------------------------------------------------------------------------------ report sections


def prompts_table(reps: Representations, pool: PoolResult, policy: Policy, test: np.ndarray,
                  assignment: pa.Table) -> Table:
    """The id -> text legend with each prompt's numbers, best predicted effect first."""
    eff, se = policy.head.static_effect(reps.X[test], reps.T, reps.T[policy.state.incumbent])
    counts = Counter(assignment.column("recommended_prompt_id").to_pylist())
    n = assignment.num_rows
    rows = [{"id": f"{p} (static)" if j == policy.state.incumbent else str(p), "text": t, "train_mean": float(m),
             "effect": float(e), "ci": f"{e - _Z95 * s_:+.4f} to {e + _Z95 * s_:+.4f}",
             "share": counts.get(str(p), 0) / n}
            for j, (p, t, m, e, s_) in enumerate(zip(reps.prompt_ids, reps.prompt_texts, pool.train_means, eff, se))]
    rows.sort(key=lambda r: -r["effect"])
    for r in rows:  # the static prompt against itself: the reference, not a certain zero effect
        if r["id"].endswith(" (static)"):
            r.update(effect=None, ci="the reference")
    return Table([Column("id", "id", "code"), Column("text", "prompt text"),
                  Column("train_mean", "mean score (training)", "num"),
                  Column("effect", "predicted effect vs static", "signed"), Column("ci", "95% CI", "range"),
                  Column("share", "queries assigned", "pct")], rows,
                 note="Predicted effects are averaged over the held-out queries; 'queries assigned' is the share of "
                      "the run's queries the policy recommends the prompt for.")


def policy_table(ho: dict[str, Any]) -> Table:
    rows = []
    for p in ho["policies"].values():
        if "value" in p:
            same = is_no_difference(p["diff"], p["ci_low"], p["ci_high"])
            rows.append({"policy": p["label"], "value": p["value"], "diff": None if same else p["diff"],
                         "ci": format_difference(0, 0, 0) if same else f"{p['ci_low']:+.4f} to {p['ci_high']:+.4f}",
                         "depart": p["share_not_static"]})
    s = ho["static_prompt"]
    if "value" in s:
        rows.append({"policy": f"best static prompt ('{s['id']}')", "value": s["value"], "ci": "the reference"})
    if "logging_policy" in ho:
        lg = ho["logging_policy"]
        rows.append({"policy": LOGGING, "value": lg["value"],
                     "diff": -lg["static_minus_logging"], "ci": f"{-lg['ci_high']:+.4f} to {-lg['ci_low']:+.4f}"})
    if "oracle_value" in ho:
        rows.append({"policy": "oracle (peeks at the outcomes; an upper bound)", "value": ho["oracle_value"]})
    return Table([Column("policy", "policy"), Column("value", "held-out value", "num"),
                  Column("diff", "vs best static", "signed"), Column("ci", "95% CI of the difference", "range"),
                  Column("depart", "departs from static", "pct")], rows,
                 note=f"{ho['n_queries']:,} held-out queries; differences are paired per query.")


def candidates_section(cands: pa.Table | None) -> Table | None:
    if cands is None:
        return None
    rows = [{"id": r["id"], "text": r["text"], "uplift": r["uplift_vs_best_logged"],
             "ci": f"{r['uplift_ci_low']:+.4f} to {r['uplift_ci_high']:+.4f}", "inside": r["in_support"],
             "wins": r["query_wins"], "lineage": r["lineage"]} for r in cands.slice(0, 15).to_pylist()]
    for r, c in zip(rows, cands.slice(0, 15).to_pylist()):  # the best logged static prompt itself: the reference
        if is_no_difference(c["uplift_vs_best_logged"], c["uplift_ci_low"], c["uplift_ci_high"]):
            r.update(uplift=None, ci="the reference")
    return Table([Column("id", "id", "code"), Column("text", "prompt text"),
                  Column("uplift", "predicted vs best logged", "signed"), Column("ci", "95% CI", "range"),
                  Column("inside", "inside trust region"), Column("wins", "queries where best", "int"),
                  Column("lineage", "how it was made")], rows,
                 note="Model predictions: no LLM has run these prompts. Ranked by static objective (lower bound).")


def trace_section(trace: list[dict[str, Any]]) -> Table | None:
    if not trace:
        return None
    return Table([Column("round", "round", "int"), Column("proposed", "proposed", "int"),
                  Column("scored", "new, scored", "int"), Column("excluded", "outside trust region", "int"),
                  Column("archive", "scored so far", "int"), Column("best_static_id", "best so far", "code"),
                  Column("best_static_effect", "its predicted effect", "signed"),
                  Column("round_seconds", "seconds", "num")], trace)


def diagnostics_section(d: dict[str, Any]) -> Table:
    """The causal fit's diagnostics, one row per quantity with what it means."""
    over = d.get("overlap") or [float("nan")]
    rows = (("rows / queries / folds", f"{d['n_rows']:,} / {d['n_groups']:,} / {d['n_folds']}",
             "triplets fitted, distinct queries (folds never split one), cross-fitting folds"),
            ("outcome R^2 (out of fold)", f"{d['r2_y']:.3f}",
             "share of the score's variance the query alone explains; near 0: the query features say little"),
            ("prompt-feature R^2 (median)", f"{np.median(d['r2_t']):.3f}",
             "how well the query predicts which prompt it got (high: confounded logs)"),
            ("overlap (smallest)", f"{min(over):.3f}",
             "share of a prompt feature's variance left given the query; near 0: its effect is not identified"),
            ("effective sample size", f"{d['ess']:,.0f} ({d['ess_share']:.1%} of rows)",
             "how many equally informative rows the fit is worth"),
            ("final-stage condition number", f"{float(d['gram_condition']):.3g}",
             "above 1e8 the effect estimates are numerically unstable"))
    return Table([Column("q", "quantity"), Column("v", "value", "num"), Column("m", "what it means")],
                 [dict(zip("qvm", r)) for r in rows])


def run_details(reps: Representations, cfg: RunConfig, pool: PoolResult, train: np.ndarray, test: np.ndarray,
                timings: dict[str, float], result: Any) -> dict[str, Any]:
    s, h = cfg.selection, cfg.holdout
    out = {"queries (training / held-out)": f"{len(train):,} / {len(test):,}", "logged prompts": len(reps.prompt_ids),
           "training data": ("as logged" if h.simulate_confounding is None else
                             f"simulated {h.simulate_confounding} confounding (strength "
                             f"{h.confounding_strength}, {h.logged_per_query} rows per query)"),
           "selection rule": (f"lower confidence bound, z = {s.z}" + (" (simultaneous over prompts)" if s.simultaneous
                                                                      else " (one prompt at a time)")
                              if s.z > 0 else "point estimate (z = 0)"),
           "reported uplift of chosen prompts": pool.policy.estimate,
           "trust region": s.trust_region,
           "effects measured from": (f"the static prompt '{reps.prompt_ids[pool.incumbent_index]}'"
                                     if s.reference == "incumbent" else "the mean logged prompt representation"),
           "candidates of the policy": cfg.policy.candidates}
    if result is not None:
        out["searched candidates scored"] = f"{len(result.candidates):,}"
    out.update({f"time: {k}": f"{v:.1f} s" for k, v in timings.items()})
    return out


def model_comparison(causal: np.ndarray, non_causal: np.ndarray, Y_test: np.ndarray,
                     labels: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray, list[str]]]:
    """Each model's predicted effect per prompt against the prompt's mean held-out score, both centered over
    the prompts measured on held-out queries. Observational logs leave some prompts unmeasured there (never
    logged on a held-out query): they are left out (before, their NaN made every centered value NaN and
    leaked ``RuntimeWarning: Mean of empty slice``); with fewer than 2 measured prompts there is nothing
    to compare (the report says the plot is not available)."""
    measured = nan_mean(Y_test, axis=0)
    ok = np.isfinite(measured) & np.isfinite(causal) & np.isfinite(non_causal)
    if ok.sum() < 2:
        return {}
    m, kept = measured[ok] - measured[ok].mean(), [p for p, k in zip(labels, ok) if k]
    return {"causal (DML)": (causal[ok] - causal[ok].mean(), m, kept),
            "non-causal (outcome model)": (non_causal[ok] - non_causal[ok].mean(), m, kept)}


def score_axis(pool: PoolResult) -> tuple[float, float] | None:
    """The axis of the value chart: the range the score can take (the logged scores' smallest and largest,
    so 0 to 1 for 0/1 scores), never a zoom on the values that makes small differences look large."""
    if pool.static_choice is not None:
        lo, hi = pool.static_choice.score_range
        return float(lo), float(hi)
    y = pool.Y_test[np.isfinite(pool.Y_test)]
    if not y.size:
        return None
    return (0.0, 1.0) if y.min() >= 0 and y.max() <= 1 else (float(y.min()), float(y.max()))


def report_data(reps: Representations, pool: PoolResult, policy: Policy, test: np.ndarray, cands: pa.Table | None,
                result: SearchResult | None,
                ho: dict[str, Any], rec: dict[str, Any], assignment: pa.Table, run_dir: Path) -> ReportData:
    """Assemble the report's sections from the run's results."""
    eff, se = policy.head.static_effect(reps.X[test], reps.T, reps.T[policy.state.incumbent])
    effects = {str(p): Interval(e, e - _Z95 * s_, e + _Z95 * s_) for p, e, s_ in zip(reps.prompt_ids, eff, se)}
    comparison = model_comparison(eff, pool.non_causal_mean_effect, pool.Y_test, [str(p) for p in reps.prompt_ids])
    rows = np.arange(len(pool.Y_test))
    values = {p["label"]: _interval_of(pool.Y_test[rows, pool.test_choices[key]])
              for key, p in ho["policies"].items() if "value" in p}
    values[f"best static ({ho['static_prompt']['id']})"] = _interval_of(pool.Y_test[:, pool.static_index])
    values[LOGGING] = _interval_of(nan_mean(pool.Y_test, axis=1))
    values = {k: v for k, v in values.items() if v is not None}
    if pool.policy_values is not None:  # every policy's value with its evidence, measured or estimated
        values = {f"{k} [{v.kind}]": Interval(v.value, v.ci_low, v.ci_high)
                  for k, v in pool.policy_values.labelled().items()}
    return ReportData(
        title=f"cpo run report: {run_dir.name}", headline=rec["headline"], headline_details=rec["details"],
        commands=[f"cpo assign --model {run_dir} --queries NEW_QUERIES.parquet --out assignments.parquet",
                  f"python -c \"from cpo_engine import Policy; print(Policy.load('{run_dir}').assign(['your query "
                  "text']).to_pandas())\""],
        prompts=prompts_table(reps, pool, policy, test, assignment), prompt_effects=effects, policy_values=values,
        value_axis=score_axis(pool),
        policy_table=policy_table(ho), tiers=pool.tiers, comparison=comparison, candidates=candidates_section(cands),
        trace=trace_section([] if result is None else result.trace),
        notes=findings(pool, reps) + ([] if pool.policy_values is None else pool.policy_values.lines()),
        glossary=glossary(policy.state.selection))


def findings(pool: PoolResult, reps: Representations) -> list[str]:
    """Plain-language findings: does the per-query choice beat the best static prompt?"""
    out = []
    s = str(reps.prompt_ids[pool.static_index])
    for key, ev in pool.evaluations.items():
        if "skipped" in ev:
            out.append(f"{POLICY_LABELS[key]}: not evaluated on held-out outcomes ({ev['skipped']}).")
            continue
        d = ev["vs_static"]
        verdict = ("wins" if d["ci_low"] > 0 else "loses" if d["ci_high"] < 0 else "is not distinguishable")
        if is_no_difference(d["diff"], d["ci_low"], d["ci_high"]):
            out.append(f"{POLICY_LABELS[key]}: held-out value {ev['policy_value']:.4f}, {format_difference(0, 0, 0)}: "
                       f"it chose the best static prompt '{s}' for all {d['n']} held-out queries.")
            continue
        out.append(f"{POLICY_LABELS[key]}: held-out value {ev['policy_value']:.4f} vs best static prompt '{s}' "
                   f"{ev['static_value']:.4f}; difference {d['diff']:+.4f} (95% CI {d['ci_low']:+.4f} to "
                   f"{d['ci_high']:+.4f}, {d['n']} queries): it {verdict}; it departs from the static prompt on "
                   f"{ev['share_not_static']:.0%} of queries.")
    return out


# ------------------------------------------------------------------------------ writing


def write_run_outputs(run_dir: Path, reps: Representations, cfg: RunConfig, causal: CausalRewardModel, pool: PoolResult,
                      result: SearchResult | None,
                      train: np.ndarray, test: np.ndarray,
                      timings: dict[str, float]) -> tuple[dict[str, Any], dict[str, Path]]:
    """Write the policy, assignment, best static prompt, candidates, trace, pool evaluation, report and the
    held-out numbers and recommendation into ``summary.json``."""
    run_dir = Path(run_dir)
    out = run_dir / "search"
    policy = make_policy(run_dir, reps, cfg, causal, pool, result, train)
    # the choice the held-out evaluation scored, unless searched candidates compete in the assignment (those have
    # no recorded outcomes: the held-out evaluation scores the policy over the logged prompts)
    assignment = assignment_table(policy, reps, test, pool.policy if policy is pool.run_policy else None)
    cands = None if result is None else candidates_table(
        result, reps.X, reps.T[pool.static_index], pool.head,
        None if pool.static_choice is None else pool.static_choice.uplift_bounds())
    ho = held_out(reps, pool)
    rec = recommendation(policy, assignment, ho, cands)
    if pool.policy_values is not None and pool.policy_values.evidence == ESTIMATED:  # no held-out grid to measure on
        rec["details"].append(pool.policy_values.sentence(POLICY_LABELS["causal_lcb"]))
    evaluation = {"static_prompt_id": str(reps.prompt_ids[pool.static_index]),
                  "static_choice": None if pool.static_choice is None else pool.static_choice.to_dict(),
                  "incumbent_prompt_id": str(reps.prompt_ids[pool.incumbent_index]),
                  "static_rank_agreement": pool.static_rank_agreement, "evaluations": pool.evaluations,
                  "tiers": pool.tiers, "n_train_queries": int(len(train)), "n_test_queries": int(len(test)),
                  "config": asdict(cfg), "timings_s": timings, "diagnostics": causal.diagnostics_.to_dict(),
                  "recommendation": rec, "held_out": ho, "policy": policy.describe(),
                  "policy_values": None if pool.policy_values is None else pool.policy_values.to_dict()}
    files: dict[str, tuple[str, Any]] = {
        "assignment": ("assignment.parquet", assignment),
        "held_out_choices": ("held_out_choices.parquet", held_out_choices(reps, pool, test)),
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
    # policy.json after the candidates: it records their hash, so serving refuses an edited candidates file
    policy.state.searched_sha256 = None if cands is None else searched_candidates_sha256(cands)
    policy.state.save(run_dir / "model")
    data = report_data(reps, pool, policy, test, cands, result, ho, rec, assignment, run_dir)
    data.summary = run_details(reps, cfg, pool, train, test, timings, result)
    data.diagnostics = diagnostics_section(causal.diagnostics_.to_dict())
    data.diagnostic_warnings = ([f"Per-query policy not trusted: {p}" for p in policy.problems]
                                + [f"Causal fit: {w}" for w in causal.diagnostics_.warnings])
    paths["report"] = write_report(run_dir, data)
    paths["report_sections"] = run_dir / SECTIONS_FILE
    paths["summary"] = _update_summary(run_dir / "summary.json", {"held_out": ho, "recommendation": rec,
                                                                  "static_choice": evaluation["static_choice"],
                                                                  "policy_values": evaluation["policy_values"]})
    return evaluation, paths


def _update_summary(path: Path, extra: dict[str, Any]) -> Path:
    """Add the run's results to ``summary.json`` (written with the data summary earlier in the run)."""
    current = json.loads(path.read_text()) if path.is_file() else {}
    return atomic_write_json(path, current | extra)


def _write_json(obj: Any, path: Path) -> Path:
    return atomic_write_json(path, obj)


def print_findings(evaluation: dict[str, Any], result: Any, paths: dict[str, Path]) -> None:
    """Console summary: the recommendation, pool-mode findings, best searched prompt, report path."""
    warnings = evaluation.get("diagnostics", {}).get("warnings", [])
    problems = (evaluation.get("policy") or {}).get("problems") or []
    print("causal model fit diagnostics: " + ("; ".join(warnings) if warnings else "no warnings")
          + (f"; the per-query policy failed {len(problems)} reliability check(s) (above): every query gets the "
             "static prompt" if problems and (evaluation.get("policy") or {}).get("fallback") else
             f"; the per-query policy failed {len(problems)} reliability check(s) (above)" if problems else ""))
    measured = any("skipped" not in e for e in evaluation["evaluations"].values())
    print(f"pool mode on {evaluation['n_test_queries']} held-out queries "
          f"(best static prompt: {evaluation['static_prompt_id']})"
          + (" [measured: held-out recorded outcomes]:" if measured else ":"))
    for key, e in evaluation["evaluations"].items():
        if "skipped" in e:
            print(f"  {POLICY_LABELS[key]:<28} not evaluated: {e['skipped']}")
            continue
        d = e["vs_static"]
        print(f"  {POLICY_LABELS[key]:<28} value {e['policy_value']:.4f} vs static {e['static_value']:.4f}: "
              + format_difference(d["diff"], d["ci_low"], d["ci_high"]))
    if result is not None:
        best = result.candidates[result.best_static]
        print(f"generative search: {len(result.candidates)} candidates scored; " + (
            f"none beats the logged prompt '{best.id}' on average" if best.round == 0 else
            f"best static: {best.text!r} (predicted only: no LLM ran it)"))
    if evaluation.get("policy_values"):
        print("\n".join(format_policy_values(evaluation["policy_values"])))
    print(f"recommendation: {evaluation['recommendation']['headline']}")
    print(f"report: {paths['report']}")


__all__ = ["write_run_outputs", "make_policy", "assignment_table", "held_out_choices", "candidates_table", "best_static", "held_out",
           "recommendation", "model_comparison", "report_data", "findings", "print_findings", "GLOSSARY",
           "glossary"]
