"""The value of several policies on the same held-out queries, each with a 95% interval and the kind of
evidence behind it, compared (paired by query) with the logging policy and the best static prompt.

Two ways to get there, and the result says which:

- :func:`measured_policy_values`: every (query, prompt) cell the policies need was observed (a full
  grid), so a policy's value is the mean recorded score of its choices (*measured*);
- :func:`estimated_policy_values`: observational logs (one or a few prompts per query), so a policy's
  value is an off-policy estimate (:mod:`cpo_engine.causal.ope`, doubly robust by default:
  *estimated*).

In both, the logging policy's value is the mean of the logged scores (*measured*): "better than what
we run today" is the first question.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cpo_engine.causal.evidence import ESTIMATED, MEASURED, NO_DEPARTURES, LabelledValue, is_no_difference
from cpo_engine.causal.ope import (
    BanditLogs,
    OPEConfig,
    PolicyEstimate,
    _estimate,
    _per_query,
    estimate_policy_value,
    estimator_label,
    on_policy_value,
    paired_difference,
)
from cpo_engine.causal.ope_estimators import estimator_names, estimator_spec

LOGGING = "logging policy (as logged)"


@dataclass
class PolicyValues:
    """Values of named policies on the same queries, with paired comparisons.

    Attributes
    ----------
    evidence : str
        :data:`~cpo_engine.causal.evidence.MEASURED` or :data:`~cpo_engine.causal.evidence.ESTIMATED`.
    method : str
        How the values were obtained, in words.
    estimates : dict of str -> PolicyEstimate
        The headline value of each policy (and of :data:`LOGGING`).
    vs_logging, vs_static : dict of str -> dict
        Paired differences (diff, se, ci_low, ci_high, n) against the logging policy and the static
        policy named ``static_name``.
    all_estimates : dict of str -> dict of str -> PolicyEstimate
        Every off-policy estimator of every policy (empty when measured).
    diagnostics : dict
        Propensity source and model fit, overlap per prompt.
    """

    evidence: str
    method: str
    estimates: dict[str, PolicyEstimate]
    vs_logging: dict[str, dict[str, float]]
    vs_static: dict[str, dict[str, float]]
    static_name: str | None = None
    all_estimates: dict[str, dict[str, PolicyEstimate]] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def labelled(self) -> dict[str, LabelledValue]:
        """Each policy's value as a :class:`LabelledValue` (the logging policy is always measured)."""
        return {name: e.labelled() for name, e in self.estimates.items()}

    def to_dict(self) -> dict[str, Any]:
        return {"evidence": self.evidence, "method": self.method, "static_policy": self.static_name,
                "values": {k: v.to_dict() for k, v in self.labelled().items()},
                "vs_logging": self.vs_logging, "vs_static": self.vs_static,
                "estimators": {p: {e: v.to_dict() for e, v in ests.items()} for p, ests in self.all_estimates.items()},
                "diagnostics": self.diagnostics}

    def sentence(self, name: str) -> str:
        """One sentence on policy ``name``: its value and its difference from the logging policy."""
        v, d = self.labelled()[name], self.vs_logging.get(name)
        vs = "" if d is None else (f"; vs the logging policy ({self.estimates[LOGGING].value:.4f}) {d['diff']:+.4f} "
                                   f"(95% CI {d['ci_low']:+.4f} to {d['ci_high']:+.4f})")
        return (f"{v.kind.capitalize()}, {self.method}: {name} {v.value:.4f} (95% CI {v.ci_low:.4f} to "
                f"{v.ci_high:.4f}){vs}.")

    def lines(self) -> list[str]:
        """Plain-text lines for the console and the report (see :func:`format_policy_values`)."""
        return format_policy_values(self.to_dict())


def format_policy_values(d: dict[str, Any]) -> list[str]:
    """Lines of a :meth:`PolicyValues.to_dict` result: each policy's value, interval and evidence, its
    paired difference from the logging policy and the static policy, bounds and overlap warnings."""
    out = [f"policy values, {d['method']} (95% intervals, clustered by query):"]
    for name, v in d["values"].items():
        line = f"  {name:<34} {v['value']:.4f} ({v['ci_low']:.4f} to {v['ci_high']:.4f}) [{v['kind']}]"
        for short, diffs in (("logging policy", d["vs_logging"]), ("static", d["vs_static"])):
            c = diffs.get(name)
            if c is not None and short == "static" and is_no_difference(c["diff"], c["ci_low"], c["ci_high"]):
                line += f"; {NO_DEPARTURES}"
            elif c is not None:
                line += f"; vs {short} {c['diff']:+.4f} ({c['ci_low']:+.4f} to {c['ci_high']:+.4f})"
        out.append(line)
        headline = d["estimators"].get(name, {})
        est = next((e for e in headline.values() if e.get("off_support")), None)
        if est is not None and est["bounds"] is not None:
            out.append(f"    {est['off_support']:.1%} of its choices were (almost) never logged: without the reward "
                       f"model there, the value is only bounded: {est['bounds'][0]:.4f} to {est['bounds'][1]:.4f}")
        if v.get("note"):
            out.append(f"    note: {v['note']}")
    return out


def _paired(estimates: dict[str, PolicyEstimate], ref: str | None, level: float) -> dict[str, dict[str, float]]:
    if ref is None or ref not in estimates:
        return {}
    return {n: paired_difference(e, estimates[ref], level) for n, e in estimates.items() if n != ref}


def measured_policy_values(Y: np.ndarray, policies: dict[str, Any], logged: np.ndarray,
                           static_name: str | None = None, level: float = 0.95) -> PolicyValues:
    """Values from fully observed outcomes.

    Parameters
    ----------
    Y : array (n_queries, n_prompts)
        Mean recorded score of every cell (no NaN).
    policies : dict of str -> int or int array (n_queries,)
        A static prompt index or one prompt index per query.
    logged : array (n_queries,)
        Mean logged score of each query (the logging policy's value per query).
    """
    rows, queries = np.arange(len(Y)), np.arange(len(Y))
    est = {name: _estimate("held_out", Y[rows, np.broadcast_to(np.asarray(c), rows.shape)], queries, Y.size, level)
           for name, c in policies.items()}
    est[LOGGING] = _estimate("on_policy", np.asarray(logged, np.float64), queries, len(logged), level)
    return PolicyValues(MEASURED, estimator_label("held_out"), est, _paired(est, LOGGING, level), _paired(est, static_name, level),
                        static_name)


def estimated_policy_values(logs: BanditLogs, policies: dict[str, Any], q_hat: np.ndarray | None,
                            cfg: OPEConfig | None = None, propensity_matrix: np.ndarray | None = None,
                            static_name: str | None = None, diagnostics: dict[str, Any] | None = None,
                            where: str = "held-out logs") -> PolicyValues:
    """Off-policy values of each policy on ``logs`` (see :func:`~cpo_engine.causal.ope.estimate_policy_value`);
    the headline is ``cfg.estimator`` (SNIPS when it needs a reward model and none is given), computed with the
    default estimators. Overlap warnings are raised once per policy and kept with its estimate."""
    cfg = cfg or OPEConfig()
    headline = cfg.estimator if q_hat is not None or not estimator_spec(cfg.estimator).needs_reward_model else "snips"
    estimators = estimator_names(default=True)
    estimators += (headline,) * (headline not in estimators)
    all_est: dict[str, dict[str, PolicyEstimate]] = {}
    for name, policy in policies.items():
        all_est[name] = estimate_policy_value(logs, policy, q_hat, cfg, estimators, name=name,
                                              propensity_matrix=propensity_matrix,
                                              y_range=(float(logs.y.min()), float(logs.y.max())))
    for name, e in all_est.items():
        _warn_disagreement(name, e, headline)
    est = {name: e[headline] for name, e in all_est.items()}
    est[LOGGING] = on_policy_value(logs, cfg.level)
    method = f"{estimator_label(headline)} off-policy estimate on {where}"
    return PolicyValues(ESTIMATED, method, est, _paired(est, LOGGING, cfg.level), _paired(est, static_name, cfg.level),
                        static_name, all_est, diagnostics or {})


def _warn_disagreement(name: str, estimates: dict[str, PolicyEstimate], headline: str) -> None:
    """IPW and DR estimate the same value; far apart beyond their noise, the propensities or the reward model
    are wrong, and the headline says so instead of printing one of them without comment."""
    ipw, dr = estimates.get("ipw"), estimates.get("dr")
    if ipw is None or dr is None or headline not in estimates:
        return
    gap, noise = abs(ipw.value - dr.value), float(np.hypot(ipw.se, dr.se))
    if np.isfinite(noise) and gap > 3 * noise and gap > 0.02:
        estimates[headline].warnings.append(
            f"IPW ({ipw.value:.3f}) and doubly robust ({dr.value:.3f}) estimates of '{name}' disagree far beyond their "
            "noise: the propensities (given or estimated) or the reward model are wrong here; check the "
            "propensity column and the overlap table before trusting either")


def logged_means(q: np.ndarray, y: np.ndarray, n_queries: int) -> np.ndarray:
    """Mean logged score per query index 0..n_queries-1 (every query must have rows)."""
    queries, (m,) = _per_query(q, y)
    if len(queries) != n_queries:
        raise ValueError("every query needs logged rows")
    return m


__all__ = ["LOGGING", "PolicyValues", "estimated_policy_values", "format_policy_values", "logged_means", "measured_policy_values"]
