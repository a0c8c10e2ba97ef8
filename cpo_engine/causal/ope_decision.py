"""One decision from a table of policy values: deploy the best policy shown better than the logging policy,
or keep the logging policy, and which policies it cannot be told apart from.

The rule (:func:`decide`), at level ``1 - alpha`` over ``K`` candidate policies:

- a candidate is *shown better* when the lower end of its paired difference from the logging policy
  (per-query differences of influence values, :func:`~cpo_engine.causal.ope.paired_difference`), at the
  Bonferroni level ``1 - alpha / K``, is above 0;
- the decision deploys the highest-valued candidate among those shown better, else keeps the logging policy.

When every policy has the same value, each candidate's lower end is above 0 with probability at most
``alpha / (2K)``, so the chance of deploying any policy (the error: a policy chosen as better when none is)
is at most ``alpha / 2`` as far as the Student-t intervals hold (a Monte Carlo test checks the rate is at most
``alpha`` on simulated confounded logs of 1,000 queries). They hold less well where a few rows carry large
importance weights and the reward model is biased there: on 300 such queries a t lower end at the
Bonferroni level (one-sided 0.4%) was above 0 for about 2% of the draws, and a studentized bootstrap did
no better (a sample that lacks the rare rows cannot show them); trust a decision on few queries less.
"Not distinguishable from Y"
means the paired difference of the chosen policy and Y has a ``1 - alpha`` interval containing 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cpo_engine.causal.ope import paired_difference
from cpo_engine.causal.policy_values import LOGGING, PolicyValues


@dataclass
class OPEDecision:
    """The decision of :func:`decide`.

    Attributes
    ----------
    deploy : str or None
        The policy to deploy; None: keep the logging policy.
    best : str
        The highest-valued candidate (the one deployed, when one is).
    level, adjusted_level : float
        The stated level and the Bonferroni level of the comparisons with the logging policy.
    vs_logging : dict
        ``best`` minus the logging policy at ``adjusted_level`` (diff, ci_low, ci_high, ...).
    indistinguishable : list of str
        Policies whose paired difference from the chosen one (``deploy``, else the logging policy) has a
        ``level`` interval containing 0, best first.
    """

    deploy: str | None
    best: str
    value: float
    ci_low: float
    ci_high: float
    level: float
    adjusted_level: float
    n_candidates: int
    vs_logging: dict[str, float]
    logging_value: float
    indistinguishable: list[str] = field(default_factory=list)

    def line(self) -> str:
        """The decision in one line."""
        pct = f"{self.level:.0%}"
        rest = (f"; not distinguishable from {', '.join(self.indistinguishable)}" if self.indistinguishable
                else "; distinguishable from every other policy")
        d = self.vs_logging
        adj = f"{self.adjusted_level:.1%}".replace(".0%", "%")
        vs = (f"{d['diff']:+.4f} vs the logging policy ({adj} CI {d['ci_low']:+.4f} to {d['ci_high']:+.4f}: {pct} "
              f"over {self.n_candidates} policies, Bonferroni)")
        if self.deploy is not None:
            return (f"deploy {self.deploy}: value {self.value:.4f} ({pct} CI {self.ci_low:.4f} to {self.ci_high:.4f}), "
                    f"{vs}{rest}")
        return (f"keep the logging policy ({self.logging_value:.4f}): no policy is shown better at {pct} (the best, "
                f"{self.best}, {self.value:.4f}: {vs}){rest}")

    def to_dict(self) -> dict[str, Any]:
        return {"deploy": self.deploy, "keep_logging_policy": self.deploy is None, "best": self.best,
                "value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high, "level": self.level,
                "adjusted_level": self.adjusted_level, "n_candidates": self.n_candidates,
                "vs_logging": self.vs_logging, "logging_value": self.logging_value,
                "indistinguishable": self.indistinguishable, "line": self.line(),
                "rule": "deploy the highest-valued policy whose paired difference from the logging policy has a "
                        "Bonferroni-adjusted interval above 0; else keep the logging policy"}


def decide(values: PolicyValues, level: float = 0.95) -> OPEDecision:
    """Deploy or keep (see the module docstring); ``values`` must hold :data:`LOGGING` and one candidate or more."""
    est = values.estimates
    candidates = sorted((n for n in est if n != LOGGING), key=lambda n: -est[n].value)
    if LOGGING not in est or not candidates:
        raise ValueError("a decision needs the logging policy and at least one candidate policy")
    adjusted, vs, better = shown_better(est, candidates, LOGGING, level)
    chosen = better[0] if better else None
    best = chosen or candidates[0]
    ref = chosen or LOGGING
    others = [n for n in candidates + [LOGGING] if n != ref]
    same = [n for n in others if _contains_zero(paired_difference(est[ref], est[n], level))]
    lo, hi = est[best].reported
    return OPEDecision(chosen, best, est[best].value, lo, hi, level, adjusted, len(candidates), vs[best],
                       est[LOGGING].value, sorted(same, key=lambda n: -est[n].value))


def shown_better(est: dict[str, Any], names: list[str], baseline: str, level: float,
                 margin: float = 0.0) -> tuple[float, dict[str, dict[str, float]], list[str]]:
    """Which of ``names`` are shown better than ``baseline``: the lower end of each one's paired difference, at the
    Bonferroni level ``1 - (1 - level) / len(names)``, above ``margin``. Returns that level, every difference and
    the names shown better (in the order given). `cpo ope`'s decision and the nightly promotion use it."""
    adjusted = 1 - (1 - level) / len(names)
    vs = {n: paired_difference(est[n], est[baseline], adjusted) for n in names}
    return adjusted, vs, [n for n in names if vs[n]["ci_low"] > margin]


def _contains_zero(d: dict[str, float]) -> bool:
    return bool(d["ci_low"] <= 0 <= d["ci_high"])


__all__ = ["OPEDecision", "decide", "shown_better"]
