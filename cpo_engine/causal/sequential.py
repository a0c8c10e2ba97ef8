"""Sequential verification valid under peeking: anytime-valid confidence sequences for the mean paired
difference of a candidate prompt and the incumbent, a budgeted stopping rule over several candidates with
false promotions controlled across all of them, and the uplift a budget can detect.

The confidence sequence is the predictable plug-in empirical-Bernstein CS (PrPl-EB) of
Waudby-Smith & Ramdas, "Estimating means of bounded random variables by betting", JRSS-B 86(1), 2024
(arXiv:2010.09686), Theorem 2 with the plug-in of their eq. (13)-(15): for X_i in [0, 1] with common mean
mu, ``P(exists t: mu not in C_t) <= alpha``. Paired differences d = y_cand - y_inc in [-1, 1] (scores in
[0, 1]) enter as x = (d + 1) / 2. Because the guarantee holds simultaneously over all t, one may look after
every query and stop whenever one likes; a fixed-n interval looked at after every query does not keep its
level (tests/test_sequential_verify.py checks both).

Pure numpy; :mod:`cpo_engine.workflows.verify` drives it with LLM calls, the tests with simulated ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Callable, Sequence

import numpy as np

from cpo_engine.exceptions import ConfigError

#: cap on the betting fraction (the paper's c in (0, 1); 1/2 is their default)
LAMBDA_CAP = 0.5


def _psi(lam: np.ndarray) -> np.ndarray:
    """psi_E(lambda) = (-log(1 - lambda) - lambda) / 4."""
    return (-np.log1p(-lam) - lam) / 4.0


def _lambdas(t: np.ndarray, var_prev: np.ndarray, alpha: float) -> np.ndarray:
    return np.minimum(np.sqrt(2.0 * math.log(2.0 / alpha) / (var_prev * t * np.log1p(t))), LAMBDA_CAP)


def eb_cs(x: np.ndarray, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """The PrPl-EB confidence sequence for the mean of ``x`` in [0, 1] along its last axis.

    Returns ``(lower, upper)`` of the same shape as ``x``: the CS after 1, 2, ... observations,
    intersected over time (still valid: the intersection of sets that all hold together holds).
    Leading axes are independent sequences (replications, candidates).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.size and (np.nanmin(x) < 0 or np.nanmax(x) > 1):
        raise ValueError("eb_cs needs observations in [0, 1]; rescale paired differences with (d + 1) / 2")
    t = np.arange(1, x.shape[-1] + 1, dtype=np.float64)
    csum = np.cumsum(x, axis=-1)
    mu_hat = (0.5 + csum) / (t + 1)                                   # mu_hat_t
    mu_prev = np.concatenate([np.full(x.shape[:-1] + (1,), 0.5), mu_hat[..., :-1]], axis=-1)
    var_hat = (0.25 + np.cumsum((x - mu_hat) ** 2, axis=-1)) / (t + 1)  # sigma_hat^2_t
    var_prev = np.concatenate([np.full(x.shape[:-1] + (1,), 0.25), var_hat[..., :-1]], axis=-1)
    lam = _lambdas(t, var_prev, alpha)
    s_lam = np.cumsum(lam, axis=-1)
    center = np.cumsum(lam * x, axis=-1) / s_lam
    width = (math.log(2.0 / alpha) + np.cumsum(4.0 * (x - mu_prev) ** 2 * _psi(lam), axis=-1)) / s_lam
    lower = np.maximum.accumulate(np.clip(center - width, 0.0, 1.0), axis=-1)
    upper = np.minimum.accumulate(np.clip(center + width, 0.0, 1.0), axis=-1)
    return lower, upper


def diff_cs(d: np.ndarray, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """:func:`eb_cs` for paired differences in [-1, 1] (the CS of their mean, on the difference scale)."""
    lo, hi = eb_cs((np.asarray(d, dtype=np.float64) + 1.0) / 2.0, alpha)
    return 2.0 * lo - 1.0, 2.0 * hi - 1.0


def cs_alpha(alpha: float, m: int) -> float:
    """Miscoverage of each candidate's two-sided CS so that false promotions over ``m`` candidates are at most
    ``alpha``: each side of a two-sided CS at 2 alpha / m errs with probability <= alpha / m (Bonferroni)."""
    return min(2.0 * alpha / max(m, 1), 0.999)


# ------------------------------------------------------------------------------------ power


def planned_width(n: int, sd: float, alpha: float) -> tuple[float, float]:
    """Half-width of the difference-scale CS after ``n`` paired queries when the differences have sd ``sd``
    (plugged in as the variance estimate), and the sd of its centre (a lambda-weighted mean)."""
    t = np.arange(1, n + 1, dtype=np.float64)
    var_x = max(sd, 1e-3) ** 2 / 4.0
    lam = _lambdas(t, np.full_like(t, var_x), alpha)
    width = (math.log(2.0 / alpha) + np.sum(4.0 * var_x * _psi(lam))) / lam.sum()
    return 2.0 * float(width), float(sd * np.sqrt(np.sum(lam ** 2)) / lam.sum())


def detectable_uplift(n: int, sd: float, alpha: float, power: float = 0.8) -> float:
    """The smallest uplift the CS separates from 0 by query ``n`` with probability about ``power``: its
    half-width at ``n`` plus the ``power`` quantile of its centre's noise (a stop before ``n`` only adds)."""
    width, centre_sd = planned_width(n, sd, alpha)
    return min(width + NormalDist().inv_cdf(power) * centre_sd, 2.0)


# ------------------------------------------------------------------------------ the procedure


@dataclass
class CandidateOutcome:
    """One candidate's sequential verification."""

    index: int
    decision: str
    """'better' (CS above the margin: promotable), 'worse' (CS below 0), or 'undecided'."""
    stop_reason: str
    """'decided better', 'decided worse', 'budget spent' or 'queries exhausted'."""
    n: int
    """Paired queries used."""
    calls: int
    """LLM calls spent on this candidate (its own; the incumbent's are shared and counted in the total)."""
    mean: float
    ci_low: float
    ci_high: float


@dataclass
class SequentialResult:
    candidates: list[CandidateOutcome]
    calls: int
    """All LLM calls: the candidates' and the incumbent's."""
    looks: int
    alpha: float
    cs_alpha: float
    detectable: float
    sd_assumed: float
    n_planned: int
    history: list[dict] = field(default_factory=list)

    @property
    def promoted(self) -> list[int]:
        return [c.index for c in self.candidates if c.decision == "better"]


def planned_queries(budget_calls: int, m: int, samples: int = 1) -> int:
    """Paired queries each candidate gets when none stops early: every query costs (m + 1) x samples calls."""
    return int(budget_calls // ((m + 1) * samples))


def sequential_verify(draw: Callable[[Sequence[int], int, int], np.ndarray], m: int, n_queries: int, budget_calls: int,
                      alpha: float = 0.05, margin: float = 0.0, batch: int = 1, samples: int = 1,
                      sd: float = 0.5) -> SequentialResult:
    """Verify ``m`` candidates against an incumbent, look after every batch, stop each when decided.

    ``draw(active, start, stop)`` returns the paired differences (candidate minus incumbent, in [-1, 1]) of the
    ``active`` candidates on queries ``start..stop-1``, shape (len(active), stop - start); a NaN (a failed
    call) is dropped. A batch costs ``(len(active) + 1) * samples * (stop - start)`` calls; it is shrunk to fit
    the budget. False promotions (a candidate no better than the incumbent declared better) are at most
    ``alpha`` over all ``m`` candidates, whatever the data and however often one looks (:func:`cs_alpha`).
    """
    if m < 1 or batch < 1 or budget_calls < 1 or not 0 < alpha < 1:
        raise ConfigError(f"sequential verification needs m >= 1 candidates, batch >= 1, a budget >= 1 call and "
                          f"0 < alpha < 1; got m={m}, batch={batch}, budget={budget_calls}, alpha={alpha}")
    a = cs_alpha(alpha, m)
    n_plan = min(planned_queries(budget_calls, m, samples), n_queries)
    cs, sums = ConfSeq(a, m), np.zeros(m)
    decided = np.zeros(m, dtype=np.int64)
    spent, own, start, looks, history = 0, np.zeros(m, dtype=np.int64), 0, 0, []
    while True:
        active = np.flatnonzero(decided == 0).tolist()
        if not active or start >= n_queries:
            break
        per_query = (len(active) + 1) * samples
        size = min(batch, n_queries - start, (budget_calls - spent) // per_query)
        if size < 1:
            break
        d = np.asarray(draw(active, start, start + size), dtype=np.float64).reshape(len(active), size)
        spent, looks, start = spent + per_query * size, looks + 1, start + size
        own[active] += size * samples
        for col in d.T:
            x = np.full(m, np.nan)
            x[active] = col
            cs.update(x)
            sums += np.nan_to_num(x)
        decided[active] = cs.decisions(margin)[active]
        history.append({"queries": start, "calls": spent, "active": len(active)})
    out = []
    for i in range(m):
        decision, reason = {1: ("better", "decided better"), -1: ("worse", "decided worse")}.get(int(decided[i]), (
            "undecided", "queries exhausted" if start >= n_queries else "budget spent"))
        n = int(cs.n[i])
        out.append(CandidateOutcome(i, decision, reason, n, int(own[i]), float(sums[i] / n) if n else math.nan,
                                    float(cs.lower[i]), float(cs.upper[i])))
    return SequentialResult(out, spent, looks, alpha, a, detectable_uplift(max(n_plan, 1), sd, a), sd, n_plan, history)


class ConfSeq:
    """The PrPl-EB CS of :func:`diff_cs` for ``k`` sequences at once, updated one paired difference each at a
    time (O(k) a step; the same numbers, tests/test_sequential_verify.py pins one to the other)."""

    def __init__(self, alpha: float, k: int = 1) -> None:
        self.log_term = math.log(2.0 / alpha)
        z = np.zeros(k)
        self.n, self.sum_x, self.sum_sq, self.mu, self.var = z.copy(), z.copy(), z.copy(), z + 0.5, z + 0.25
        self.s_lam, self.s_lam_x, self.s_pen = z.copy(), z.copy(), z.copy()
        self.lower, self.upper = z - 1.0, z + 1.0

    def update(self, d: np.ndarray) -> None:
        """One difference per sequence (NaN: none for that one this step)."""
        d = np.asarray(d, dtype=np.float64).reshape(-1)
        ok = np.isfinite(d)
        x, t = np.where(ok, (d + 1.0) / 2.0, 0.5), self.n + 1
        lam = np.where(ok, np.minimum(np.sqrt(2.0 * self.log_term / (self.var * t * np.log1p(t))), LAMBDA_CAP), 0.0)
        self.s_pen += 4.0 * (x - self.mu) ** 2 * _psi(lam)
        self.s_lam += lam
        self.s_lam_x += lam * x
        self.n, self.sum_x = np.where(ok, t, self.n), self.sum_x + np.where(ok, x, 0.0)
        self.mu = np.where(ok, (0.5 + self.sum_x) / (self.n + 1), self.mu)
        self.sum_sq += np.where(ok, (x - self.mu) ** 2, 0.0)
        self.var = np.where(ok, (0.25 + self.sum_sq) / (self.n + 1), self.var)
        with np.errstate(invalid="ignore", divide="ignore"):
            centre, width = self.s_lam_x / self.s_lam, (self.log_term + self.s_pen) / self.s_lam
            lo, hi = 2.0 * np.clip(centre - width, 0.0, 1.0) - 1.0, 2.0 * np.clip(centre + width, 0.0, 1.0) - 1.0
        self.lower = np.where(ok, np.maximum(self.lower, lo), self.lower)
        self.upper = np.where(ok, np.minimum(self.upper, hi), self.upper)

    def decisions(self, margin: float) -> np.ndarray:
        """+1 decided better (lower end above ``margin``), -1 decided worse (upper end below 0), 0 undecided."""
        return np.where((self.n > 0) & (self.lower > margin), 1, np.where((self.n > 0) & (self.upper < 0), -1, 0))


def power_statement(res: SequentialResult, samples: int = 1) -> str:
    """Before spending: the uplift this budget can detect."""
    return (f"with this budget ({res.n_planned} paired queries per candidate if none stops early, "
            f"{len(res.candidates)} candidate(s), false promotions <= {res.alpha:g} overall) you can detect an "
            f"uplift of {res.detectable:.3f} or more (power ~0.8, assuming paired-difference sd {res.sd_assumed:g})")


def plan_statement(n_planned: int, m: int, alpha: float, sd: float) -> str:
    """:func:`power_statement` before any call is made."""
    a = cs_alpha(alpha, m)
    return (f"with this budget ({n_planned} paired queries per candidate if none stops early, {m} candidate(s), "
            f"false promotions <= {alpha:g} overall) you can detect an uplift of "
            f"{detectable_uplift(max(n_planned, 1), sd, a):.3f} or more (power ~0.8, assuming paired-difference "
            f"sd {sd:g})")


__all__ = ["eb_cs", "diff_cs", "cs_alpha", "planned_width", "detectable_uplift", "sequential_verify",
           "SequentialResult", "CandidateOutcome", "ConfSeq", "planned_queries", "power_statement", "plan_statement"]
