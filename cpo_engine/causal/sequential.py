"""Sequential verification valid under peeking: anytime-valid confidence sequences for the mean paired
difference of a candidate prompt and the incumbent, a budgeted stopping rule over several candidates with
false promotions controlled across all of them, and the uplift a budget can detect.

The confidence sequence is the hedged-capital betting CS of Waudby-Smith & Ramdas, "Estimating means of
bounded random variables by betting", JRSS-B 86(1), 2024 (arXiv:2010.09686), Theorem 3: for X_i in [0, 1]
with common mean mu and each candidate mean m, two wealth processes bet that the mean is above or below m,
``K+_t(m) = prod (1 + l+_i(m) (X_i - m))`` and ``K-_t(m) = prod (1 - l-_i(m) (X_i - m))``; their average is
a nonnegative martingale at m = mu, so ``C_t = {m : (K+_t(m) + K-_t(m)) / 2 < 1 / alpha}`` satisfies
``P(exists t: mu not in C_t) <= alpha`` (Ville's inequality). The bets are predictable: ``l+_i(m) =
min(l_i, c / m)``, ``l-_i(m) = min(l_i, c / (1 - m))`` with ``c = 3/4`` and ``l_i = sqrt(2 log(2/alpha) /
(sigma2_{i-1} n))``, the paper's plug-in tuned to the planned number of queries n (any predictable bet keeps
the guarantee; tuning to n only makes the CS narrowest there), ``sigma2_{i-1}`` the shrunk running variance
of their eq. (13)-(15). C_t is computed on a grid of m and widened by one grid step each side, so it only
errs wide. At 63 queries per candidate and 8 candidates it is about half as wide as the empirical-Bernstein
CS this module used before (tests/test_sequential_verify.py). Paired differences d = y_cand - y_inc in
[-1, 1] (scores in [0, 1]) enter as x = (d + 1) / 2. Because the guarantee holds simultaneously over all t,
one may look after every query and stop whenever one likes; a fixed-n interval looked at after every query
does not keep its level (the tests check both).

Pure numpy; :mod:`cpo_engine.workflows.verify` drives it with LLM calls, the tests with simulated ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Callable, Sequence

import numpy as np

from cpo_engine.exceptions import ConfigError

#: the paper's c: a bet on mean m stakes at most c / m (or c / (1 - m)) of the wealth
LAMBDA_CAP = 0.75
#: candidate means on the [0, 1] scale (cell centres; the difference scale's resolution is 2 / GRID)
GRID = 1000


class ConfSeq:
    """The hedged betting CS (module docstring) of ``k`` sequences of paired differences at once, updated one
    difference each at a time (O(k x grid) a step); ``lower``/``upper`` on the difference scale [-1, 1], the
    running intersection over time (still valid: sets that all hold together intersect to one that holds).

    ``horizon``: the planned number of differences per sequence, which the bets are tuned to (None: the paper's
    untuned schedule ``t log(1 + t)``, narrowest for no n in particular).
    """

    def __init__(self, alpha: float, k: int = 1, horizon: int | None = None, grid: int = GRID) -> None:
        if not 0 < alpha < 1 or grid < 10 or (horizon is not None and horizon < 1):
            raise ConfigError(f"a confidence sequence needs 0 < alpha < 1, grid >= 10 and horizon >= 1; got {alpha}, "
                              f"{grid}, {horizon}")
        self.log_term, self.log_thr, self.horizon = math.log(2.0 / alpha), math.log(1.0 / alpha), horizon
        self.m = (np.arange(grid) + 0.5) / grid
        self.cap_up, self.cap_down = LAMBDA_CAP / self.m, LAMBDA_CAP / (1.0 - self.m)
        self.log_up, self.log_down = np.zeros((k, grid)), np.zeros((k, grid))
        z = np.zeros(k)
        self.n, self.sum_x, self.sum_sq, self.var = z.copy(), z.copy(), z.copy(), z + 0.25
        self.lower, self.upper = z - 1.0, z + 1.0

    def update(self, d: np.ndarray) -> None:
        """One difference per sequence (NaN: none for that one this step)."""
        d = np.asarray(d, dtype=np.float64).reshape(-1)
        ok = np.isfinite(d)
        x, t = np.where(ok, (d + 1.0) / 2.0, 0.5), self.n + 1
        scale = float(self.horizon) if self.horizon else t * np.log1p(t)
        lam = np.where(ok, np.sqrt(2.0 * self.log_term / (self.var * scale)), 0.0)[:, None]
        gap = np.subtract(x[:, None], self.m)
        for log_w, cap, sign in ((self.log_up, self.cap_up, 1.0), (self.log_down, self.cap_down, -1.0)):
            bet = np.minimum(lam, cap)
            bet *= gap
            if sign < 0:
                np.negative(bet, out=bet)
            log_w += np.log1p(bet, out=bet)
        self.n, self.sum_x = np.where(ok, t, self.n), self.sum_x + np.where(ok, x, 0.0)
        mu = (0.5 + self.sum_x) / (self.n + 1)
        self.sum_sq += np.where(ok, (x - mu) ** 2, 0.0)
        self.var = np.where(ok, (0.25 + self.sum_sq) / (self.n + 1), self.var)
        inside = np.logaddexp(self.log_up, self.log_down, out=gap) < self.log_thr + math.log(2.0)
        some = inside.any(axis=1)
        g = self.m.size
        first, last = inside.argmax(axis=1), g - 1 - inside[:, ::-1].argmax(axis=1)
        lo = np.where(first > 0, self.m[np.maximum(first - 1, 0)], 0.0)       # one grid step wide each side
        hi = np.where(last < g - 1, self.m[np.minimum(last + 1, g - 1)], 1.0)
        upd = ok & some  # an empty set (possible only on a miss) leaves the last interval
        self.lower = np.where(upd, np.maximum(self.lower, 2.0 * lo - 1.0), self.lower)
        self.upper = np.where(upd, np.minimum(self.upper, 2.0 * hi - 1.0), self.upper)

    def decisions(self, margin: float) -> np.ndarray:
        """+1 decided better (lower end above ``margin``), -1 decided worse (upper end below 0), 0 undecided."""
        return np.where((self.n > 0) & (self.lower > margin), 1, np.where((self.n > 0) & (self.upper < 0), -1, 0))


def diff_cs(d: np.ndarray, alpha: float = 0.05, horizon: int | None = None,
            grid: int = GRID) -> tuple[np.ndarray, np.ndarray]:
    """The CS of :class:`ConfSeq` for paired differences ``d`` in [-1, 1] along the last axis: ``(lower, upper)``
    after 1, 2, ... differences, the shape of ``d`` (leading axes: independent sequences, e.g. replications)."""
    d = np.asarray(d, dtype=np.float64)
    if d.size and (np.nanmin(d) < -1 or np.nanmax(d) > 1):
        raise ValueError("diff_cs needs paired differences in [-1, 1] (scores in [0, 1])")
    flat = d.reshape(-1, d.shape[-1])
    cs = ConfSeq(alpha, flat.shape[0], horizon, grid)
    lo, hi = np.empty_like(flat), np.empty_like(flat)
    for i in range(flat.shape[1]):
        cs.update(flat[:, i])
        lo[:, i], hi[:, i] = cs.lower, cs.upper
    return lo.reshape(d.shape), hi.reshape(d.shape)


def cs_alpha(alpha: float, m: int) -> float:
    """Miscoverage of each candidate's two-sided CS so that false promotions over ``m`` candidates are at most
    ``alpha``: each side of a two-sided CS at 2 alpha / m errs with probability <= alpha / m (Bonferroni)."""
    return min(2.0 * alpha / max(m, 1), 0.999)


# ------------------------------------------------------------------------------------ power


def _three_point(uplift: float, sd: float) -> tuple[np.ndarray, np.ndarray]:
    """Paired differences in {-1, 0, 1} with mean ``uplift`` and sd ``sd`` (0/1 grades): values, probabilities."""
    v = min(max(sd * sd, abs(uplift) * (1.0 - abs(uplift))), 1.0 - uplift * uplift)  # the feasible variances
    p = np.array([(v + uplift * uplift - uplift) / 2.0, 1.0 - v - uplift * uplift, (v + uplift * uplift + uplift) / 2.0])
    return np.array([-1.0, 0.0, 1.0]), np.clip(p, 0.0, 1.0)


def power_at(uplift: float, n: int, sd: float, alpha: float) -> float:
    """Probability that the CS's lower end is above 0 after ``n`` paired differences of mean ``uplift`` and sd
    ``sd`` (three-point law, :func:`_three_point`): a normal approximation of the log wealth betting against
    m = 1/2 (difference 0), the bet fixed at its tuned value with the variance known."""
    vals, p = _three_point(uplift, sd)
    x = (vals + 1.0) / 2.0
    var_x = max(float(p @ (x - p @ x) ** 2), 1e-6)
    lam = min(math.sqrt(2.0 * math.log(2.0 / alpha) / (var_x * n)), LAMBDA_CAP / 0.5)
    step = np.log1p(lam * (x - 0.5))
    mean, spread = float(p @ step), float(np.sqrt(max(p @ (step - p @ step) ** 2, 1e-12)))
    return NormalDist().cdf((n * mean - math.log(2.0 / alpha)) / (math.sqrt(n) * spread))


def detectable_uplift(n: int, sd: float, alpha: float, power: float = 0.8) -> float:
    """The smallest uplift the CS separates from 0 by query ``n`` with probability about ``power``
    (:func:`power_at`, bisection; a stop before ``n`` and the running intersection only add)."""
    lo, hi = 0.0, 1.0
    if power_at(hi, n, sd, alpha) < power:
        return 2.0
    for _ in range(40):
        mid = (lo + hi) / 2.0
        lo, hi = (lo, mid) if power_at(mid, n, sd, alpha) >= power else (mid, hi)
    return hi


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
    cs, sums = ConfSeq(a, m, horizon=max(n_plan, 1)), np.zeros(m)
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


__all__ = ["diff_cs", "cs_alpha", "power_at", "detectable_uplift", "sequential_verify",
           "SequentialResult", "CandidateOutcome", "ConfSeq", "planned_queries", "power_statement", "plan_statement"]
