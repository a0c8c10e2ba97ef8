"""Off-policy evaluation checked against truth on a full outcome grid (part of `cpo evaluate`).

In each repetition of the evaluation, every method's policy is a fixed function of the training
logs. Held-out logs are then drawn with the same logging policy on test queries drawn *with
replacement* from the test set: the draws are independent queries from a population whose true
policy values are known exactly (the mean of the grid's cell means over the test queries, what
:func:`~cpo_engine.causal.evaluation.policy_metrics` reports), which is the estimand of the query-
clustered intervals. Each estimator's value of each policy, with known propensities and with those
of the cross-fitted propensity model (fitted on the training logs with the DML fit's folds), is
compared with that truth: bias, RMSE and coverage of the 95% interval over seeds.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from cpo_engine.causal.evaluation import Grid, draw_logs
from cpo_engine.causal.ope import (
    BanditLogs,
    OPEConfig,
    OverlapWarning,
    causal_q_hat,
    estimate_policy_value,
    on_policy_value,
)
from cpo_engine.causal.ope_estimators import estimator_names
from cpo_engine.causal.propensity import PropensityModel, propensity_features

SOURCES = ("known", "estimated")


def validate_seed(grid: Grid, X: np.ndarray, T: np.ndarray, policy: np.ndarray, logs: dict, test: np.ndarray,
                  causal: Any, choices: dict[str, np.ndarray], k: int, ope: OPEConfig,
                  rng: np.random.Generator, seed: int, draws: int = 1,
                  other_q_hats: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """OPE of each method's choice (index per test query) on ``draws`` fresh held-out logs, against the truth.

    ``logs`` are the training logs the causal model was fitted on (its ``folds_`` index them);
    ``policy`` is the logging policy (n_queries, n_prompts). The reward model and the propensity model
    are fitted once; each draw is an independent sample of queries and logged outcomes given them.
    ``other_q_hats`` (name -> (n_test, n_prompts) predictions) are compared with the causal model as
    the reward model of DM and DR (known propensities).
    """
    truth = grid.truth[test]
    q_hat = causal_q_hat(causal, X[test], T, (float(logs["y"].min()), float(logs["y"].max())))
    reward_models = {"causal": q_hat} | (other_q_hats or {})
    F = propensity_features(X, grid.query_texts if ope.propensity_text_features else None)
    prop = PropensityModel(ope.propensity_model, ope.propensity_c, random_state=seed).fit(
        F[logs["q"]], logs["p"], n_prompts=T.shape[0], folds=causal.folds_)
    P_hat = prop.predict_proba(F[test])
    rows = np.arange(len(test))
    out: dict[str, Any] = {"truth": {m: float(truth[rows, c].mean()) for m, c in choices.items()},
                           "logging_truth": float((policy[test] * truth).sum(1).mean()),
                           "propensity_model": prop.diagnostics(), "draws": []}
    for _ in range(draws):
        draw = rng.choice(len(test), size=len(test), replace=True)  # positions in `test`
        held = draw_logs(grid, policy, test[draw], k, rng)
        local = np.repeat(np.arange(len(draw)), k)  # each draw is its own query (cluster)
        one: dict[str, Any] = {"estimates": {}, "weights": {}}
        for source, P in (("known", policy[test][draw]), ("estimated", P_hat[draw])):
            bandit = BanditLogs(local, held["p"], held["y"], P[local, held["p"]], logged=source == "known")
            one["estimates"][source], one["weights"][source] = _estimate_all(bandit, choices, draw, q_hat[draw], P, ope)
        known = BanditLogs(local, held["p"], held["y"], held["pi"], logged=True)
        one["by_reward_model"] = {name: _dm_dr(known, choices, draw, qh[draw], ope) for name, qh in reward_models.items()}
        on = on_policy_value(known, ope.level)
        one["logging_estimate"] = [on.value, on.ci_low, on.ci_high]
        out["draws"].append(one)
    return out


def _estimate_all(bandit: BanditLogs, choices: dict[str, np.ndarray], draw: np.ndarray, q_hat: np.ndarray,
                  P: np.ndarray, ope: OPEConfig) -> tuple[dict, dict]:
    """Every estimator of every method's policy on one draw, and the DR weights' diagnostics."""
    est_out, weights = {}, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OverlapWarning)
        for method, choice in choices.items():
            est = estimate_policy_value(bandit, choice[draw], q_hat, ope, name=method, propensity_matrix=P)
            est_out[method] = {e: [v.value, v.ci_low, v.ci_high] for e, v in est.items()}
            w = est["dr"]
            est_out[method]["dr_reported"] = [w.value, *w.reported]
            weights[method] = {"ess": w.ess, "clipped_share": w.clipped_share, "off_support": w.off_support,
                               "bounds": list(w.bounds), "bounded": w.bounded, "warned": bool(w.warnings)}
    return est_out, weights


def _dm_dr(bandit: BanditLogs, choices: dict[str, np.ndarray], draw: np.ndarray, q_hat: np.ndarray,
           ope: OPEConfig) -> dict[str, dict[str, list[float]]]:
    """DM and DR of every method's policy with one reward model."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OverlapWarning)
        return {m: {e: [v.value, v.ci_low, v.ci_high] for e, v in
                    estimate_policy_value(bandit, c[draw], q_hat, ope, ("dm", "dr")).items()} for m, c in choices.items()}


def _coverage_ci(hits: int, n: int) -> tuple[float, float]:
    """Wilson 95% interval of a coverage share."""
    if n == 0:
        return float("nan"), float("nan")
    z, p = 1.959964, hits / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(c - h), float(c + h)


def error_stats(est: np.ndarray, lo: np.ndarray, hi: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Bias, RMSE, coverage (with a Wilson interval) and mean width of estimates vs truth."""
    err = est - truth
    hits = int(((lo <= truth) & (truth <= hi)).sum())
    c_lo, c_hi = _coverage_ci(hits, len(err))
    sd = float(err.std(ddof=1) / np.sqrt(len(err))) if len(err) > 1 else float("nan")
    return {"bias": float(err.mean()), "bias_se": sd, "rmse": float(np.sqrt((err ** 2).mean())),
            "coverage": hits / len(err), "coverage_ci_low": c_lo, "coverage_ci_high": c_hi,
            "mean_width": float((hi - lo).mean()), "n": len(err)}


def summarize_ope(per_seed: list[dict]) -> dict[str, Any]:
    """Per propensity source and estimator: error statistics per method and pooled over methods, over
    every (seed, draw); plus the bounds' coverage, the share of estimates that warned, the off-support
    share, and the logging policy's (on-policy) value."""
    seeds = [s["ope"] for s in per_seed if s.get("ope")]
    if not seeds:
        return {}
    runs = [(s, d) for s in seeds for d in s["draws"]]
    methods = list(seeds[0]["truth"])
    out: dict[str, Any] = {"n_seeds": len(seeds), "n_draws": len(runs), "by_method": {}, "pooled": {}, "bounds": {},
                           "warned_share": {}, "off_support": {}}
    for source in SOURCES:
        out["by_method"][source], out["pooled"][source] = {}, {}
        for e in estimator_names(default=True) + ("dr_reported",):
            cols = {m: np.array([d["estimates"][source][m][e] + [s["truth"][m]] for s, d in runs]) for m in methods}
            out["by_method"][source][e] = {m: error_stats(*c.T) for m, c in cols.items()}
            out["pooled"][source][e] = error_stats(*np.vstack(list(cols.values())).T)
        w = [(d["weights"][source][m], s["truth"][m]) for s, d in runs for m in methods]
        b = np.array([x["bounds"] + [t] for x, t in w])
        out["bounds"][source] = error_stats((b[:, 0] + b[:, 1]) / 2, b[:, 0], b[:, 1], b[:, 2])
        out["warned_share"][source] = float(np.mean([x["warned"] for x, _ in w]))
        out["off_support"][source] = float(np.mean([x["off_support"] for x, _ in w]))
        out.setdefault("bounded_share", {})[source] = float(np.mean([x["bounded"] for x, _ in w]))
    on = np.array([d["logging_estimate"] + [s["logging_truth"]] for s, d in runs])
    out["logging_policy"] = error_stats(*on.T)
    fair = [m for m in methods if not m.startswith("oracle")]  # an oracle's choices peek at the truth
    out["by_reward_model"] = {rm: {e: error_stats(*np.array([d["by_reward_model"][rm][m][e] + [s["truth"][m]]
                                                             for s, d in runs for m in fair]).T)
                                   for e in ("dm", "dr")} for rm in runs[0][1].get("by_reward_model", {})}
    return out


def ope_markdown(summary: dict[str, Any]) -> str:
    """OPE error table: pooled over methods, per estimator and propensity source."""
    if not summary:
        return ""
    draws = summary["n_draws"] // summary["n_seeds"]
    lines = [(f"\nOff-policy evaluation vs truth ({summary['n_seeds']} seeds x {draws} held-out log draws, pooled "
              "over every method's policy; coverage of the 95% interval, with a Wilson 95% interval that treats "
              "the estimates as independent)\n"),
             "| propensities | estimator | bias | RMSE | coverage | mean CI width |", "|---|---|---|---|---|---|"]
    for source, by_est in summary["pooled"].items():
        for e, s in by_est.items():
            lines.append(f"| {source} | {e} | {s['bias']:+.4f} | {s['rmse']:.4f} | {s['coverage']:.3f} "
                         f"[{s['coverage_ci_low']:.2f}, {s['coverage_ci_high']:.2f}] | {s['mean_width']:.4f} |")
    for source, b in summary["bounds"].items():
        lines.append(f"| {source} | bounds (off-support part in the score range) | | | {b['coverage']:.3f} | "
                     f"{b['mean_width']:.4f} |")
    lp = summary["logging_policy"]
    lines.append(f"| (logged) | logging policy, on-policy mean | {lp['bias']:+.4f} | {lp['rmse']:.4f} | "
                 f"{lp['coverage']:.3f} | {lp['mean_width']:.4f} |")
    if summary.get("by_reward_model"):
        lines += ["\nReward model inside DM and DR (known propensities; pooled over the non-oracle methods):\n",
                  "| reward model | DM bias | DM RMSE | DM coverage | DR bias | DR RMSE | DR coverage |",
                  "|---|---|---|---|---|---|---|"]
        for rm, st in summary["by_reward_model"].items():
            dm, dr = st["dm"], st["dr"]
            lines.append(f"| {rm} | {dm['bias']:+.4f} | {dm['rmse']:.4f} | {dm['coverage']:.3f} | {dr['bias']:+.4f} | "
                         f"{dr['rmse']:.4f} | {dr['coverage']:.3f} |")
    lines.append("\noff-support share of the policies' choices (propensity < support_floor): " + ", ".join(
        f"{k} {v:.3f}" for k, v in summary["off_support"].items()) + "; share of estimates with an overlap "
                 "warning: " + ", ".join(f"{k} {v:.2f}" for k, v in summary["warned_share"].items())
                 + "; share reported as bounds (dr_reported): " + ", ".join(
                     f"{k} {v:.2f}" for k, v in summary.get("bounded_share", {}).items()))
    return "\n".join(lines) + "\n"


__all__ = ["SOURCES", "error_stats", "ope_markdown", "summarize_ope", "validate_seed"]
