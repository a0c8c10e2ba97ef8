"""Off-policy evaluation (OPE): the value of a prompt policy estimated from logs drawn by another policy.

Logs are rows ``(query q, logged prompt a, score y, propensity p)`` where ``p = pi_0(a | q)`` is the
probability that the logging policy chose ``a`` for ``q``. A target policy ``pi(a | q)`` (a per-query
assignment, a static prompt or a stochastic policy) has value ``V(pi) = mean_q sum_a pi(a|q) mu(q, a)``
over the logged queries, ``mu`` the expected score. The estimators use importance weights
``w = pi(a|q) / max(p, min_propensity)`` and a reward model ``q_hat(q, a)``; they are registered in
:mod:`cpo_engine.causal.ope_estimators` (:func:`estimator_names` lists them; the defaults, computed with
every evaluation, are those of :mod:`cpo_engine.causal.ope_estimators.standard`: direct method, IPW, SNIPS,
doubly robust and self-normalized doubly robust).

Rows are averaged within each query first, so every query counts once and the estimand is the mean
over queries. Intervals are Student-t intervals of the per-query influence values (clustered by
query: the rows of a query are not independent); for the self-normalized estimators the influence
values are those of the ratio (delta method). Two policies evaluated on the same logs are compared
with :func:`paired_difference` on the same per-query values.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cpo_engine.causal.evidence import ESTIMATED, MEASURED, LabelledValue
from cpo_engine.causal.ope_estimators import LoggedRows, estimator_help, estimator_names, estimator_spec
from cpo_engine.causal.ope_estimators import per_query_means as _per_query
from cpo_engine.exceptions import ConfigError, DataError

log = logging.getLogger(__name__)

#: Values that are not off-policy estimates, measured directly (their label and evidence).
_MEASURED_LABELS = {"on_policy": "on-policy mean of the logged scores", "held_out": "held-out recorded outcomes"}


def estimator_label(name: str) -> str:
    """``name`` in words: a registered estimator's label, or one of the measured values' (on_policy, held_out);
    an unknown name as it is."""
    if name in _MEASURED_LABELS:
        return _MEASURED_LABELS[name]
    return estimator_spec(name).label if name in estimator_names() else name


def __getattr__(name: str) -> Any:
    # Formerly hand-written constants; now read from the registry.
    if name == "ESTIMATORS":  # the default estimators
        return estimator_names(default=True)
    if name == "ESTIMATOR_LABELS":
        return {n: estimator_spec(n).label for n in estimator_names()} | _MEASURED_LABELS
    raise AttributeError(f"module '{__name__}' has no attribute '{name}'")


class OverlapWarning(UserWarning):
    """Off-policy estimates that rest on too few effectively weighted rows or on clipped weights: the
    logs rarely chose what the target policy chooses, so the estimate (and its interval) is fragile."""


@dataclass
class OPEConfig:
    """Off-policy evaluation settings (`cpo ope`, and `cpo run`/`cpo optimize` on observational logs)."""

    min_propensity: float = 0.01
    """*Estimated* propensities below this are raised to it before weighting (weights are at most 1 / this).
    Clipping trades a small bias (corrected by the reward model in DR) for a bounded variance."""
    min_logged_propensity: float = 0.001
    """The floor for propensities the logs carry (the ``propensity`` column: the logging policy's own
    probabilities, not a model's). Far lower than ``min_propensity``: clipping a true propensity biases the
    estimate of exactly the prompts the logging policy rarely chose (a 16-prompt policy with 10% uniform
    exploration logs each prompt with probability >= 0.00625, which a floor of 0.01 would clip)."""
    estimator: str = field(default="dr", metadata={"choices": estimator_names, "describe": estimator_help})
    """The headline estimator: a registered one (:func:`cpo_engine.causal.ope_estimators.estimator_names`;
    `cpo ope --help` lists them), doubly robust by default; one that needs a reward model falls back to
    'snips' when none is available."""
    level: float = 0.95
    """Confidence level of the intervals."""
    propensity_model: str = "logistic"
    """Model of P(prompt | query features) when the logs have no 'propensity' column:
    'logistic' (multinomial) or 'hgb' (gradient boosting)."""
    propensity_c: float = 1.0
    """Inverse L2 penalty of the logistic propensity model (on standardized features)."""
    propensity_text_features: bool = True
    """Give the propensity model each query's log length and number count besides its features X."""
    min_ess: float = 30.0
    """Warn when the importance weights' effective sample size is below this many rows."""
    max_clipped_share: float = 0.05
    """Warn when more than this share of the target's weighted rows had their propensity clipped."""
    support_floor: float = 0.001
    """A choice whose logging propensity is below this is off support: the logs essentially never make
    it, so its value is only bounded (known only with a propensity model or a known policy matrix)."""
    max_off_support: float = 0.05
    """When more than this share of a policy's choices are off support, warn and report the bounds as
    its interval (the reward model alone would decide the rest)."""

    def __post_init__(self) -> None:
        if not 0 < self.min_propensity < 1:
            raise ConfigError(f"ope.min_propensity must be in (0, 1), got {self.min_propensity}")
        if not 0 < self.min_logged_propensity < 1:
            raise ConfigError(f"ope.min_logged_propensity must be in (0, 1), got {self.min_logged_propensity}")
        if not 0 <= self.support_floor < 1:
            raise ConfigError(f"ope.support_floor must be in [0, 1), got {self.support_floor}")
        estimator_spec(self.estimator)  # a ConfigError naming the registered ones
        if not 0 < self.level < 1:
            raise ConfigError(f"ope.level must be in (0, 1), got {self.level}")
        if self.propensity_model not in ("logistic", "hgb"):
            raise ConfigError(f"ope.propensity_model must be 'logistic' or 'hgb', got '{self.propensity_model}'")
        if self.propensity_c <= 0 or self.min_ess < 0:
            raise ConfigError("ope.propensity_c must be > 0 and ope.min_ess >= 0")
        if not (0 <= self.max_clipped_share <= 1 and 0 <= self.max_off_support <= 1):
            raise ConfigError("ope.max_clipped_share and ope.max_off_support must be in [0, 1]")


@dataclass
class BanditLogs:
    """Logged rows: query index ``q`` (into the policy's and the reward model's rows), logged prompt
    index ``a``, score ``y`` and the logging propensity ``p`` of the logged prompt; ``logged``: ``p`` is the
    logging policy's own probability (a ``propensity`` column), not a model's estimate."""

    q: np.ndarray
    a: np.ndarray
    y: np.ndarray
    p: np.ndarray
    logged: bool = False

    def floor(self, cfg: "OPEConfig") -> float:
        """The propensity floor these logs get (``min_logged_propensity`` for logged ones)."""
        return cfg.min_logged_propensity if self.logged else cfg.min_propensity

    def __post_init__(self) -> None:
        self.q, self.a = np.asarray(self.q, dtype=np.int64), np.asarray(self.a, dtype=np.int64)
        self.y, self.p = np.asarray(self.y, dtype=np.float64), np.asarray(self.p, dtype=np.float64)
        n = len(self.y)
        if not (len(self.q) == len(self.a) == len(self.p) == n) or n == 0:
            raise DataError(f"logs need q, a, y, p of one equal, non-zero length; got {len(self.q)}, "
                            f"{len(self.a)}, {n}, {len(self.p)}")
        bad = ~np.isfinite(self.p) | (self.p <= 0) | (self.p > 1)
        if bad.any():
            raise DataError("propensities must be in (0, 1]", column="propensity",
                            rows=np.flatnonzero(bad)[:20].tolist(),
                            fix="store the logging policy's probability of the logged prompt; drop the column "
                                "to have it estimated from the query features")
        if not np.isfinite(self.y).all():
            raise DataError("scores must be finite", column="score", rows=np.flatnonzero(~np.isfinite(self.y))[:20].tolist())


@dataclass
class PolicyEstimate:
    """One estimator's value of one policy, with its interval and weight diagnostics."""

    estimator: str
    value: float
    se: float
    ci_low: float
    ci_high: float
    n_rows: int
    n_queries: int
    ess: float | None = None
    """Kish effective sample size of the (clipped) importance weights, in rows."""
    clipped_share: float | None = None
    """Share of rows with a positive target probability whose propensity was clipped."""
    floor: float | None = None
    """The propensity floor the weights used (``min_propensity``, or ``min_logged_propensity`` for logged ones)."""
    max_weight: float | None = None
    off_support: float | None = None
    """Share of the target's choices whose logging propensity is below ``support_floor``: the
    logs (almost) never made them, so their value rests on the reward model."""
    bounds: tuple[float, float] | None = None
    """Worst/best-case value: the on-support part estimated (its 95% interval), the off-support part
    anywhere in the score range. It holds without trusting the reward model off support."""
    bounded: bool = False
    """More than ``max_off_support`` of the choices are off support: the reported interval is ``bounds``."""
    warnings: list[str] = field(default_factory=list)
    queries: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    pseudo: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    """Per-query influence values (their mean is ``value``): what intervals and paired differences use."""
    bound_pseudo: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)
    """Per-query values of the lower and upper bound."""

    @property
    def reported(self) -> tuple[float, float]:
        """The interval to report: the 95% interval, or the bounds when the estimate is ``bounded``."""
        return self.bounds if self.bounded and self.bounds is not None else (self.ci_low, self.ci_high)

    @property
    def evidence(self) -> str:
        if self.estimator in _MEASURED_LABELS:
            return MEASURED
        return estimator_spec(self.estimator).evidence if self.estimator in estimator_names() else ESTIMATED

    def labelled(self) -> LabelledValue:
        """The value as a :class:`~cpo_engine.causal.evidence.LabelledValue`."""
        note = estimator_spec(self.estimator).note if self.estimator in estimator_names() else ""
        if self.bounded:
            note = (f"interval = bounds: {self.off_support:.1%} of the choices are off the logs' support, where only "
                    "the score range is known (the point value extrapolates the reward model there)")
        lo, hi = self.reported
        return LabelledValue(self.value, lo, hi, self.evidence,
                             estimator_label(self.estimator), n=self.n_queries,
                             note="; ".join([note] * bool(note) + self.warnings))

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("estimator", "value", "se", "ci_low", "ci_high", "n_rows", "n_queries",
                                              "ess", "clipped_share", "max_weight", "off_support", "bounded", "warnings")}
        out["bounds"] = None if self.bounds is None else list(self.bounds)
        return out | {"evidence": self.evidence}


# ---------------------------------------------------------------------------------------------- policies
def policy_matrix(policy: Any, n_queries: int, n_prompts: int) -> np.ndarray:
    """A target policy as a probability matrix (n_queries, n_prompts).

    ``policy`` is a prompt index (static policy), an int array of one prompt index per query (a
    deterministic per-query assignment) or a probability matrix (stochastic; rows sum to 1).
    """
    if np.ndim(policy) == 0:
        k = int(policy)
        if not 0 <= k < n_prompts:
            raise DataError(f"static policy prompt index {k} is outside [0, {n_prompts})")
        out = np.zeros((n_queries, n_prompts))
        out[:, k] = 1.0
        return out
    arr = np.asarray(policy)
    if arr.ndim == 1:
        if len(arr) != n_queries or arr.dtype.kind not in "iu" or arr.min() < 0 or arr.max() >= n_prompts:
            raise DataError(f"a per-query policy needs one prompt index in [0, {n_prompts}) for each of "
                            f"{n_queries} queries, got shape {arr.shape} dtype {arr.dtype}")
        out = np.zeros((n_queries, n_prompts))
        out[np.arange(n_queries), arr] = 1.0
        return out
    arr = np.asarray(arr, dtype=np.float64)
    if arr.shape != (n_queries, n_prompts):
        raise DataError(f"a stochastic policy must be a ({n_queries}, {n_prompts}) matrix, got {arr.shape}")
    if (arr < -1e-12).any() or not np.allclose(arr.sum(1), 1.0, atol=1e-6):
        bad = np.flatnonzero((arr < -1e-12).any(1) | ~np.isclose(arr.sum(1), 1.0, atol=1e-6))
        raise DataError("each query's policy probabilities must be >= 0 and sum to 1", rows=bad[:20].tolist())
    return np.clip(arr, 0.0, None)


# ---------------------------------------------------------------------------------------------- estimators
def _interval(pseudo: np.ndarray, level: float) -> tuple[float, float, float, float]:
    """Mean, standard error and Student-t interval of per-query values."""
    from scipy.stats import t as student_t

    m, n = float(pseudo.mean()), len(pseudo)
    se = float(pseudo.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    h = float(student_t.ppf(0.5 + level / 2, n - 1)) * se if n > 1 else float("nan")
    return m, se, m - h, m + h


def _estimate(name: str, pseudo: np.ndarray, queries: np.ndarray, n_rows: int, level: float,
              weight_stats: dict[str, Any] | None = None) -> PolicyEstimate:
    value, se, lo, hi = _interval(pseudo, level)
    return PolicyEstimate(name, value, se, lo, hi, n_rows, len(queries), **(weight_stats or {}),
                          queries=queries, pseudo=pseudo)


def weight_diagnostics(target_prob: np.ndarray, p: np.ndarray, w: np.ndarray, min_propensity: float) -> dict:
    """Effective sample size, share of clipped propensities among weighted rows, largest weight."""
    s1, s2 = float(w.sum()), float((w * w).sum())
    pos = target_prob > 0
    clipped = float(np.mean(p[pos] < min_propensity)) if pos.any() else 0.0
    return {"ess": s1 * s1 / s2 if s2 > 0 else 0.0, "clipped_share": clipped,
            "max_weight": float(w.max()) if len(w) else 0.0}


def estimate_policy_value(logs: BanditLogs, policy: Any, q_hat: np.ndarray | None = None,
                          cfg: OPEConfig | None = None, estimators: tuple[str, ...] | None = None,
                          name: str = "policy", propensity_matrix: np.ndarray | None = None,
                          y_range: tuple[float, float] | None = None) -> dict[str, PolicyEstimate]:
    """Off-policy estimates of a target policy's value on logged bandit data.

    Parameters
    ----------
    logs : BanditLogs
        Logged rows; ``logs.q`` indexes the rows of ``policy`` and ``q_hat``.
    policy : int, int array (n_queries,) or array (n_queries, n_prompts)
        The target policy (see :func:`policy_matrix`).
    q_hat : array (n_queries, n_prompts), optional
        Reward-model prediction of every (query, prompt) cell. It must not have been fitted on
        these rows (fit it on other queries, or cross-fit it). Without it only the estimators that need no
        reward model run ('ipw' and 'snips' of the defaults).
    cfg : OPEConfig
        Propensity clipping, confidence level, warning thresholds.
    estimators : tuple of str, optional
        Registered estimators to compute (:func:`~cpo_engine.causal.ope_estimators.estimator_names`);
        default: the default ones (``estimator_names(default=True)``).
    name : str
        The policy's name, for warnings.
    propensity_matrix : array (n_queries, n_prompts), optional
        The logging policy P(prompt | query) for every cell (known, or a propensity model's). With it,
        each estimate also reports ``off_support`` (the target's share of choices the logs almost
        never made) and ``bounds`` that do not trust the reward model there.
    y_range : (float, float), optional
        Range of the score: the bounds' range (default: the logged scores' min and max); when given, values
        and intervals are also clipped to it, with a warning on an estimate that fell outside.

    Returns
    -------
    dict of str -> PolicyEstimate

    Examples
    --------
    Logs of a confounded policy over 5 prompts whose true cell means ``mu`` are known; the value of the
    policy that gives each query its best prompt, estimated from the logs, against the truth:

    >>> import numpy as np
    >>> from cpo_engine.causal.ope import BanditLogs, estimate_policy_value
    >>> from cpo_engine.causal.synthetic import make_bandit
    >>> b = make_bandit(n_queries=2000, exploration=0.2, seed=0)
    >>> logs = BanditLogs(q=b.q, a=b.a, y=b.y, p=b.pi0[b.q, b.a], logged=True)  # p: the logging policy's
    >>> best = b.mu.argmax(1)
    >>> est = estimate_policy_value(logs, policy=best, estimators=("ipw", "snips"))
    >>> e = est["snips"]
    >>> round(e.value, 2), round(e.ci_low, 2), round(e.ci_high, 2)
    (0.72, 0.69, 0.74)
    >>> round(float(b.mu[np.arange(2000), best].mean()), 2)  # the true value; the logs' own mean is 0.64
    0.73
    """
    cfg = cfg or OPEConfig()
    estimators = estimator_names(default=True) if estimators is None else tuple(estimators)
    probs = policy_matrix(policy, *_policy_shape(policy, logs, q_hat))
    if logs.q.max() >= probs.shape[0] or logs.a.max() >= probs.shape[1]:
        raise DataError(f"logs index query {logs.q.max()} / prompt {logs.a.max()} outside the policy's "
                        f"{probs.shape[0]} x {probs.shape[1]} matrix")
    q_hat = None if q_hat is None else np.asarray(q_hat, dtype=np.float64)
    out = _estimates(logs, probs, q_hat, cfg, estimators)
    if propensity_matrix is not None and out:
        P = np.asarray(propensity_matrix, np.float64)
        _add_support(out, logs, probs, q_hat, cfg, logged_support(P, logs) if logs.logged else P,
                     y_range or (float(logs.y.min()), float(logs.y.max())))
    if y_range is not None:  # reported values stay in the score's range (the raw estimators do not)
        _clip_to_range(out, y_range)
    _warn_overlap(out, cfg, name)
    return out


def logged_support(P: np.ndarray, logs: BanditLogs) -> np.ndarray:
    """A propensity matrix made consistent with the logs' own propensities: each logged row's prompt gets its
    logged probability, and the query's other prompts share at most what is left (1 - p). Propensity 1.0 on
    a row says the logging policy could choose nothing else for that query: a target choosing another prompt
    there is off support, whatever a fitted model of the logging policy guesses."""
    P = np.array(P, dtype=np.float64, copy=True)
    for q, a, p in zip(logs.q, logs.a, logs.p):
        P[q, a] = p
        others = np.arange(P.shape[1]) != a
        total = P[q, others].sum()
        if total > 1.0 - p:
            P[q, others] *= max(1.0 - p, 0.0) / total
    return P


def _clip_to_range(out: dict[str, PolicyEstimate], y_range: tuple[float, float]) -> None:
    """Keep values and intervals inside the score's range, and say so when an estimate fell outside it (extreme
    weights, or a reward model that extrapolates): a value of -0.02 for a 0/1 score is not a value."""
    lo, hi = y_range
    for e in out.values():
        if lo <= e.value <= hi and lo <= e.ci_low and e.ci_high <= hi:
            continue
        if not lo <= e.value <= hi:
            e.warnings.append(f"the {e.estimator} estimate {e.value:.4f} fell outside the score's range [{lo:g}, "
                              f"{hi:g}] and is reported clipped to it: extreme importance weights or a reward model "
                              "that extrapolates; compare the other estimators")
        e.value = float(np.clip(e.value, lo, hi))
        e.ci_low, e.ci_high = float(np.clip(e.ci_low, lo, hi)), float(np.clip(e.ci_high, lo, hi))


def _estimates(logs: BanditLogs, probs: np.ndarray, q_hat: np.ndarray | None, cfg: OPEConfig,
               estimators: tuple[str, ...]) -> dict[str, PolicyEstimate]:
    """Every requested estimator for a (possibly sub-stochastic) target probability matrix."""
    pi_t = probs[logs.q, logs.a]
    floor = logs.floor(cfg)
    w = pi_t / np.maximum(logs.p, floor)
    stats = weight_diagnostics(pi_t, logs.p, w, floor) | {"floor": floor}
    rows = LoggedRows(logs.q, logs.a, logs.y, pi_t, w,
                      q_hat_logged=None if q_hat is None else q_hat[logs.q, logs.a],
                      dm=None if q_hat is None else (probs * q_hat).sum(1)[logs.q])
    specs = [estimator_spec(est, key="estimators") for est in estimators]
    return {s.name: _estimate(s.name, s.fn(rows), rows.queries, len(logs.y), cfg.level, stats if s.weighted else None)
            for s in specs if q_hat is not None or not s.needs_reward_model}


def _add_support(out: dict[str, PolicyEstimate], logs: BanditLogs, probs: np.ndarray, q_hat: np.ndarray | None,
                 cfg: OPEConfig, P: np.ndarray, y_range: tuple[float, float]) -> None:
    """Off-support share and bounds: the on-support part of the policy (cells with P >= support_floor) by
    DR (IPW without a reward model), the rest anywhere in y_range; ``bounded`` past max_off_support."""
    if P.shape != probs.shape:
        raise DataError(f"propensity_matrix must be {probs.shape}, got {P.shape}")
    off = probs * (P < cfg.support_floor)
    est = "dr" if q_hat is not None else "ipw"
    on = _estimates(logs, probs - off, q_hat, cfg, (est,))[est]
    off_q = off.sum(1)[on.queries]
    low, high = on.pseudo + y_range[0] * off_q, on.pseudo + y_range[1] * off_q
    bounds = (_interval(low, cfg.level)[2], _interval(high, cfg.level)[3])
    for e in out.values():
        if e.estimator != "dm":
            e.off_support, e.bounds, e.bound_pseudo = float(off_q.mean()), bounds, (low, high)
            e.bounded = e.off_support > cfg.max_off_support


def _policy_shape(policy: Any, logs: BanditLogs, q_hat: np.ndarray | None) -> tuple[int, int]:
    """(n_queries, n_prompts) of the policy: from q_hat, a probability matrix, or the logs' indices."""
    if q_hat is not None:
        return np.shape(q_hat)
    if np.ndim(policy) == 2:
        return np.shape(policy)
    n_q = len(policy) if np.ndim(policy) == 1 else int(logs.q.max()) + 1
    return n_q, max(int(np.max(policy)), int(logs.a.max())) + 1


def _warn_overlap(out: dict[str, PolicyEstimate], cfg: OPEConfig, name: str) -> None:
    weighted = [e for e in out.values() if e.ess is not None]
    if not weighted:
        return
    e = weighted[0]
    problems = []
    if e.ess < cfg.min_ess:
        problems.append(f"effective sample size {e.ess:.1f} rows < {cfg.min_ess:g}")
    if e.clipped_share > cfg.max_clipped_share:
        problems.append(f"{e.clipped_share:.1%} of its weighted rows had propensity < {e.floor:g} "
                        "(clipped)")
    if e.off_support is not None and e.off_support > cfg.max_off_support:
        problems.append(f"{e.off_support:.1%} of its choices have logging propensity < {cfg.support_floor:g}: "
                        f"its interval is the bounds {e.bounds[0]:.3f} to {e.bounds[1]:.3f}, which do not trust the "
                        "reward model there")
    if problems:
        msg = (f"off-policy estimate of '{name}' is fragile: {'; '.join(problems)}. The logs rarely chose what this "
               "policy chooses; trust it only with the reward model (DR) and check it by running the policy "
               "(LLM verification)")
        for est in weighted:
            est.warnings.append(msg)
        warnings.warn(msg, OverlapWarning, stacklevel=3)


def on_policy_value(logs: BanditLogs, level: float = 0.95) -> PolicyEstimate:
    """The logging policy's own value: the mean logged score, per query first (*measured*)."""
    queries, (Y,) = _per_query(logs.q, logs.y)
    return _estimate("on_policy", Y, queries, len(logs.y), level)


def paired_difference(a: PolicyEstimate, b: PolicyEstimate, level: float = 0.95) -> dict[str, float]:
    """``a - b`` with a Student-t interval of the per-query differences of their influence values (both
    must come from the same logs); when either is ``bounded``, the interval is the difference's bounds."""
    if a.queries is None or b.queries is None or not np.array_equal(a.queries, b.queries):
        raise DataError("a paired difference needs two estimates over the same logged queries")
    diff, se, lo, hi = _interval(a.pseudo - b.pseudo, level)
    if a.bounded or b.bounded:  # the bounds of the difference: lower of a minus upper of b, and back
        (a_lo, a_hi), (b_lo, b_hi) = _bound_pseudo(a), _bound_pseudo(b)
        lo, hi = _interval(a_lo - b_hi, level)[2], _interval(a_hi - b_lo, level)[3]
    return {"diff": diff, "se": se, "ci_low": lo, "ci_high": hi, "n": len(a.queries), "level": level,
            "bounded": bool(a.bounded or b.bounded)}


def _bound_pseudo(e: PolicyEstimate) -> tuple[np.ndarray, np.ndarray]:
    return e.bound_pseudo if e.bounded and e.bound_pseudo is not None else (e.pseudo, e.pseudo)


# ---------------------------------------------------------------------------------------------- reward model
def causal_q_hat(model: Any, X: np.ndarray, T: np.ndarray, y_range: tuple[float, float] | None = None) -> np.ndarray:
    """Predicted score of every (query, prompt) cell from a fitted :class:`CausalRewardModel`.

    Under the partially linear model ``Y = g(X) + theta(X)'T + e``, ``E[Y | X, T_a] = E[Y|X] +
    theta(X)'(T_a - E[T|X])`` with both nuisances from the fit (averaged over its fold models).
    Predictions are clipped to ``y_range`` (e.g. [0, 1] for binary scores).
    """
    m_y, m_t = model.nuisance_predict(X)
    theta = model.const_marginal_effect(X)  # (n_q, d_T)
    q_hat = m_y[:, None] + theta @ np.asarray(T, np.float64).T - (theta * m_t).sum(1)[:, None]
    return q_hat if y_range is None else np.clip(q_hat, *y_range)


def logged_propensity(table: Any, rows: np.ndarray) -> np.ndarray | None:
    """The ``propensity`` column on ``rows`` when the table has one without gaps there (None otherwise)."""
    import pyarrow as pa

    if "propensity" not in table.column_names:
        return None
    col = table.column("propensity").take(pa.array(rows))
    if col.null_count:
        log.warning("the propensity column has %d empty values on the evaluated rows: propensities are estimated "
                    "from the query features instead", col.null_count)
        return None
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)


__all__ = [
    "BanditLogs",
    "OPEConfig",
    "OverlapWarning",
    "PolicyEstimate",
    "causal_q_hat",
    "estimate_policy_value",
    "estimator_label",
    "logged_propensity",
    "on_policy_value",
    "paired_difference",
    "policy_matrix",
    "weight_diagnostics",
]
