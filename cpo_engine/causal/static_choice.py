"""The one prompt to use for every query, chosen with estimates that are valid on logs.

This is the one rule behind "the best static prompt" everywhere (`cpo run`, `cpo fit`, `cpo optimize`, the
policy's incumbent, the report, summary.json). A prompt's value is ``V(p) = mean_q E[score | q, p]`` over
the training queries; each logged prompt gets one estimate of it:

- *measured*, when every training query saw every candidate prompt (a full grid, or an experiment that ran
  all of them): the mean of the per-query cell means, intervals paired by query;
- *doubly robust* (cross-fitted, clustered by query), on observational logs where a query saw one or a few
  prompts. For a row ``i`` (query ``x_i``, logged prompt ``a_i``, score ``y_i``) and a prompt ``p``::

      psi_i(p) = mu(x_i, p) + R_p + w_ip (y_i - mu(x_i, p) - R_p) / mean(w_p),   w_ip = 1[a_i = p] / e_i

  (the self-normalized form, ``R_p`` the weighted mean residual), with ``e_i`` the logging propensity of the
  logged prompt: the ``propensity`` column when the logs carry one, else a multinomial model of the logged
  prompt given the query features, cross-fitted on the same query folds. ``mu(x, p) = m(x) + d_p``: ``m`` a
  cross-fitted ridge of the score on the query features (how hard the query is, as far as the features
  see) and ``d_p`` the prompt's weighted mean residual in the other folds (prompt identity, where the
  prompt was logged). Propensities correct the confounding the features cannot see; the outcome model
  removes what they do see and shrinks the variance.

The best *estimate* is the prompt with the largest empirical-Bayes posterior mean: each value shrunk toward
the mean of the candidates by ``tau^2 / (tau^2 + se^2)`` (``tau^2`` the spread of the true values, estimated
from the estimates). The argmax over raw estimates favours the prompts with the least evidence (the winner's
curse); a lower bound ``V - z se`` fixes that but favours prompts logged on queries whose scores barely vary
(easy ones, under confounding by difficulty: the very bias to correct); shrinkage does neither. Prompts
with fewer than ``min_rows`` logged rows are not candidates. Every prompt whose paired difference from the
best estimate is not significantly negative (one-sided, ``level``) is a *contender*.

The recommendation moves away from what the logs already show only on evidence, in this order:

1. the prompt logged most often (what the team runs now), if it is a contender; but if the prompt with the
   best logged mean is a contender too and the doubly robust estimates put it ahead of the most-logged one by
   at least ``ahead_z`` = 1 standard error (paired), that one. Without logged propensities the status quo has
   no such priority (``ahead_z_estimated`` = 0: whichever of the two the estimates put ahead): how often a
   prompt was logged may then follow a difficulty the features cannot see;
2. else the prompt with the best logged mean (the naive average's choice), if it is a contender;
3. else the best estimate.

So the engine leaves the status quo only where the doubly robust estimates show it worse, or the best logged
mean ahead of it; it leaves the plain average's choice only for the status quo or where the estimates show
the plain average's choice worse. When
several prompts are contenders the logs cannot separate them and the result says so (keep what you run, or
run an experiment on those prompts). bench/bench_observational.py measures the rule against the naive
average and the truth on confounded logs (docs/causal.md, "The best static prompt on logs").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Sequence

import numpy as np

from cpo_engine.causal.evidence import ESTIMATED, MEASURED
from cpo_engine.exceptions import ConfigError, DataError


@dataclass
class StaticChoiceConfig:
    """How the best static prompt is chosen (``selection.static`` in a run config)."""

    level: float = 0.95
    """One-sided confidence of the lower bound the choice maximizes (z = 1.645 at 0.95)."""
    min_rows: int = 10
    """A prompt logged on fewer training rows is not a candidate (too little evidence to value it)."""
    min_propensity: float = 0.005
    """Propensities (given or estimated) below this are raised to it before weighting."""
    folds: int = 5
    """Query folds of the cross-fitting (outcome and propensity models)."""
    ridge_alpha: float = 1.0
    """L2 penalty of the outcome model m(x) (standardized query features)."""
    combine: bool = False
    """Pool each prompt's doubly robust estimate with its logged mean where the two agree within their noise
    (the weight that minimizes the estimated mean squared error). Off by default: on the benchmark's
    confounded logs (bench/bench_observational.py) the pooled estimate let the confounding bias back in
    where it was of the order of its noise, and lost to the doubly robust estimate alone."""
    self_normalized: bool = True
    """Self-normalize the importance weights of each prompt (more stable values). The honest heterogeneity
    test turns it off: a per-prompt normalizing constant lets the outcome model's error leak into the
    per-query differences between prompts, which a test of variation across queries must not see."""
    rule: str = "eb"
    """The best estimate: 'eb' the best empirical-Bayes posterior mean (default); 'lcb' the best lower bound
    value - z se; 'point' the best raw point estimate."""
    keep_logged: bool = True
    """When the logs cannot separate the best estimate from the prompt logged most often (what the team runs
    now), recommend the latter: a switch needs evidence that it is better."""
    keep_logged_mean: bool = True
    """Else, when the logs cannot separate the best estimate from the prompt with the best logged mean (what a
    plain average picks), recommend that one: departing from the plain average needs evidence too."""
    ahead_z: float = 1.0
    """When both the most-logged prompt and the best logged mean are contenders, the latter is recommended if its
    paired doubly robust difference over the former is at least this many standard errors."""
    ahead_z_estimated: float = 0.0
    """``ahead_z`` when the propensities are estimated (the logs carry none). Then how often a prompt was
    logged may follow what the query features cannot see (difficulty): the prompt run most can be the one
    given to the easiest queries, or the hardest, and the estimated propensities cannot tell. So neither
    default has priority: the doubly robust estimates decide between the two (0: whichever they put ahead)."""

    def __post_init__(self) -> None:
        if not 0.5 < self.level < 1:
            raise ConfigError(f"selection.static.level must be in (0.5, 1), got {self.level}")
        if self.min_rows < 1 or self.folds < 2:
            raise ConfigError("selection.static.min_rows must be >= 1 and selection.static.folds >= 2")
        if self.rule not in ("eb", "lcb", "point"):
            raise ConfigError(f"selection.static.rule must be 'eb', 'lcb' or 'point', got {self.rule!r}")
        if not 0 < self.min_propensity < 1:
            raise ConfigError(f"selection.static.min_propensity must be in (0, 1), got {self.min_propensity}")


@dataclass
class PromptValue:
    """One prompt's estimated value over the training queries."""

    index: int
    prompt_id: str
    value: float
    se: float
    ci_low: float
    ci_high: float
    lcb: float
    n_rows: int
    naive_mean: float
    """Mean logged score of the prompt (what a plain average says; confounded on observational logs)."""

    def to_dict(self) -> dict[str, Any]:
        return {k: (v if not isinstance(v, float) or np.isfinite(v) else None) for k, v in self.__dict__.items()}


@dataclass
class StaticChoice:
    """The chosen static prompt, every candidate's value, and how separable the top is."""

    index: int
    prompt_id: str
    evidence: str
    """:data:`~cpo_engine.causal.evidence.MEASURED` or :data:`~cpo_engine.causal.evidence.ESTIMATED`."""
    method: str
    propensity_source: str | None
    values: list[PromptValue]
    contenders: list[int]
    """Prompts (indices) the logs cannot tell apart from the choice, the choice first."""
    level: float
    excluded: dict[str, str] = field(default_factory=dict)
    """Prompt id -> why it is not a candidate."""
    score_range: tuple[float, float] = (0.0, 1.0)
    """Smallest and largest logged score: every value and interval here stays inside it."""
    reason: str = "best estimate"
    """Why this prompt: 'measured' (a full grid), 'most logged' (the status quo, not shown worse), 'best logged
    mean' (the plain average's choice, not shown worse) or 'best estimate'."""
    propensity: np.ndarray | None = field(default=None, repr=False)
    """The (clipped) propensity of each row's logged prompt the estimates used (None when measured)."""
    queries: np.ndarray | None = field(default=None, repr=False)
    """The distinct query indices of the rows, sorted: the rows of ``pseudo``."""
    pseudo: np.ndarray | None = field(default=None, repr=False)
    """(n_queries, n_prompts) per-query pseudo-outcomes behind the values (measured cell means, or doubly
    robust): paired comparisons use them."""
    rows: dict[str, Any] | None = field(default=None, repr=False)
    """The rows it was chosen from (q, a, y, weight, propensity as given, query_texts, X, prompt_ids, config,
    seed): the honest heterogeneity test recomputes pseudo-outcomes on halves of them."""

    def uplift_bounds(self) -> tuple[float, float]:
        """The range an uplift over the chosen prompt can take on this score scale."""
        return self.score_range[0] - self.chosen.value, self.score_range[1] - self.chosen.value

    @property
    def kept_most_logged(self) -> bool:
        """The choice is the prompt logged most often, kept because the logs cannot show a better one."""
        return self.reason == "most logged"

    @property
    def separated(self) -> bool:
        return len(self.contenders) <= 1

    @property
    def chosen(self) -> PromptValue:
        return next(v for v in self.values if v.index == self.index)

    def value_of(self, index: int) -> PromptValue | None:
        return next((v for v in self.values if v.index == index), None)

    def sentence(self) -> str:
        """What to use, with its interval, or that the logs cannot choose."""
        c = self.chosen
        text = (f"Best static prompt '{self.prompt_id}': value {c.value:.4f} (95% CI {c.ci_low:.4f} to {c.ci_high:.4f}; "
                f"{self.method}).")
        if not self.separated:
            others = [self.value_of(i) for i in self.contenders[1:4]]
            listed = ", ".join(f"'{o.prompt_id}' {o.value:.4f}" for o in others if o is not None)
            more = len(self.contenders) - 1 - len([o for o in others if o is not None])
            text += (f" The logs cannot separate it from {listed}{f' and {more} more' if more > 0 else ''}"
                     + (": it is the prompt the logs ran most, so keep it" if self.kept_most_logged else
                        ": it has the best logged mean and no estimate shows it worse"
                        if self.reason == "best logged mean" else ": keep the prompt you run now if it is among these")
                     + f", or run an experiment on these {min(len(self.contenders), 3)} prompts to choose.")
        return text

    def to_dict(self) -> dict[str, Any]:
        c = self.chosen
        return {"prompt_id": self.prompt_id, "value": c.value, "ci_low": c.ci_low, "ci_high": c.ci_high,
                "evidence": self.evidence, "method": self.method, "propensity_source": self.propensity_source,
                "separated": self.separated, "kept_most_logged": self.kept_most_logged, "reason": self.reason,
                "contenders": [self.values_by_index[i].prompt_id for i in self.contenders],
                "level": self.level, "sentence": self.sentence(), "excluded": self.excluded,
                "score_range": list(self.score_range),
                "values": [v.to_dict() for v in sorted(self.values, key=lambda v: -v.lcb)]}

    @property
    def values_by_index(self) -> dict[int, PromptValue]:
        return {v.index: v for v in self.values}


def choose_static(q: Any, a: Any, y: Any, X: Any, prompt_ids: Sequence[str], *, propensity: Any = None,
                  weight: Any = None, query_texts: Sequence[str] | None = None,
                  config: StaticChoiceConfig | None = None, seed: int = 0) -> StaticChoice:
    """Choose the best static prompt from logged rows.

    Parameters
    ----------
    q, a, y : arrays (n_rows,)
        Query index (into the rows of ``X``), logged prompt index (into ``prompt_ids``), score.
    X : array (n_queries, d)
        Query features (the run's query PCA).
    propensity : array (n_rows,), optional
        Probability the logging policy gave each row's own prompt (the ``propensity`` column); estimated
        from the query features when None.
    weight : array (n_rows,), optional
        Row weights (the ``weight`` column): each query's rows are averaged with them.
    query_texts : list of str, optional
        Texts of the queries (index as ``X``): the propensity model also sees their length and number count.
    """
    cfg = config or StaticChoiceConfig()
    q, a = np.asarray(q, dtype=np.int64), np.asarray(a, dtype=np.int64)
    y = np.asarray(y, dtype=np.float64)
    X = np.asarray(X, dtype=np.float64)
    n_p = len(prompt_ids)
    if not (len(q) == len(a) == len(y)) or len(y) == 0:
        raise DataError(f"choose_static needs rows of equal length (q {len(q)}, a {len(a)}, y {len(y)}), at least one")
    if a.min() < 0 or a.max() >= n_p or q.min() < 0 or q.max() >= len(X):
        raise DataError("choose_static: a prompt or query index is out of range")
    if propensity is not None:
        propensity = np.asarray(propensity, dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(propensity) | (propensity <= 0) | (propensity > 1))
        if len(bad) or len(propensity) != len(y):
            row = int(bad[0]) if len(bad) else len(propensity)
            raise DataError(f"column 'propensity' must hold a probability in (0, 1] on every row; row {row} holds "
                            f"{propensity[row] if row < len(propensity) else 'nothing'!r}",
                            column="propensity", fix="give P(logged prompt | query) as the logging policy had it, "
                                                     "or drop the column (propensities are then estimated)")
    w_row = np.ones(len(y)) if weight is None else np.asarray(weight, dtype=np.float64)
    uq, qi = np.unique(q, return_inverse=True)
    n_rows = np.bincount(a, minlength=n_p)
    naive = np.bincount(a, weights=y, minlength=n_p) / np.maximum(n_rows, 1)
    naive[n_rows == 0] = np.nan
    excluded = {str(prompt_ids[j]): f"logged on {int(n_rows[j])} training row(s), fewer than "
                                    f"selection.static.min_rows = {cfg.min_rows}"
                for j in range(n_p) if n_rows[j] < cfg.min_rows}
    cand = np.flatnonzero(n_rows >= cfg.min_rows)
    if len(cand) == 0:
        raise DataError(f"no prompt was logged on at least {cfg.min_rows} training rows: no static prompt can be "
                        "chosen from these logs", fix="log more rows per prompt, or lower selection.static.min_rows")
    cells = np.zeros((len(uq), n_p))
    np.add.at(cells, (qi, a), 1.0)
    if (cells[:, cand] > 0).all():
        psi = _measured(qi, a, y, w_row, len(uq), n_p)
        evidence, method, source, e = MEASURED, "measured: every training query ran every candidate prompt", None, None
    else:
        e, source = _propensities(q, a, X, n_p, propensity, query_texts, uq, qi, cfg, seed)
        dr = _doubly_robust(qi, a, y, w_row, X[q], e, len(uq), n_p, cfg, seed)
        psi = _bias_aware(dr, _naive(qi, a, y, w_row, len(uq), n_p)) if cfg.combine else dr
        evidence = ESTIMATED
        method = (f"doubly robust, cross-fitted, {source} propensities"
                  + (", pooled with the logged means where they show no bias" if cfg.combine else ""))
    out = _choose(psi, cand, prompt_ids, n_rows, naive, y, evidence, method, source, excluded, cfg)
    out.propensity, out.queries, out.pseudo = e, uq, psi
    out.rows = {"q": q, "a": a, "y": y, "weight": weight, "propensity": propensity, "query_texts": query_texts,
                "X": X, "prompt_ids": list(prompt_ids), "config": cfg, "seed": seed}
    return out


def _measured(qi: np.ndarray, a: np.ndarray, y: np.ndarray, w: np.ndarray, n_q: int, n_p: int) -> np.ndarray:
    num, den = np.zeros((n_q, n_p)), np.zeros((n_q, n_p))
    np.add.at(num, (qi, a), w * y)
    np.add.at(den, (qi, a), w)
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den


def _propensities(q: np.ndarray, a: np.ndarray, X: np.ndarray, n_p: int, given: Any, texts: Any, uq: np.ndarray,
                  qi: np.ndarray, cfg: StaticChoiceConfig, seed: int) -> tuple[np.ndarray, str]:
    if given is not None:
        return np.maximum(np.asarray(given, dtype=np.float64), cfg.min_propensity), "logged"
    from cpo_engine.causal.propensity import PropensityModel, propensity_features

    F = propensity_features(X, list(texts) if texts is not None else None)
    model = PropensityModel("logistic", 1.0, random_state=seed).fit(F[q], a, n_prompts=n_p,
                                                                    folds=_row_folds(qi, len(uq), cfg.folds, seed))
    return np.maximum(model.logged_propensity(), cfg.min_propensity), "estimated"


def _row_folds(qi: np.ndarray, n_q: int, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, test rows) pairs with every query's rows in one fold."""
    from cpo_engine.causal._folds import fold_ids

    fq = fold_ids(n_q, min(k, n_q), None, seed)
    f = fq[qi]
    return [(np.flatnonzero(f != j), np.flatnonzero(f == j)) for j in range(min(k, n_q))]


def _doubly_robust(qi: np.ndarray, a: np.ndarray, y: np.ndarray, w_row: np.ndarray, Xr: np.ndarray, e: np.ndarray,
                   n_q: int, n_p: int, cfg: StaticChoiceConfig, seed: int) -> np.ndarray:
    """Per-query doubly robust pseudo-outcomes (n_q, n_p) of every prompt (self-normalized, cross-fitted)."""
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n = len(y)
    ipw = 1.0 / e
    mu = np.zeros((n, n_p))
    for train, test in _row_folds(qi, n_q, cfg.folds, seed):
        m = make_pipeline(StandardScaler(), Ridge(alpha=cfg.ridge_alpha)).fit(Xr[train], y[train])
        r = y[train] - m.predict(Xr[train])
        wt = ipw[train]
        num = np.bincount(a[train], weights=wt * r, minlength=n_p)
        den = np.bincount(a[train], weights=wt, minlength=n_p)
        d = np.divide(num, den, out=np.zeros(n_p), where=den > 0)
        mu[test] = m.predict(Xr[test])[:, None] + d[None, :]
    onehot = np.zeros((n, n_p))
    onehot[np.arange(n), a] = 1.0
    W = onehot * ipw[:, None]  # importance weight of every row for every prompt
    resid = y[:, None] - mu
    if cfg.self_normalized:
        Ww = W * w_row[:, None]
        R = (Ww * resid).sum(axis=0) / np.maximum(Ww.sum(axis=0), 1e-300)
        wbar = Ww.sum(axis=0) / w_row.sum()
        psi_rows = mu + R[None, :] + W * (resid - R[None, :]) / np.maximum(wbar, 1e-300)[None, :]
    else:
        psi_rows = mu + W * resid
    num = np.zeros((n_q, n_p))
    np.add.at(num, qi, psi_rows * w_row[:, None])
    den = np.bincount(qi, weights=w_row, minlength=n_q)
    return num / den[:, None]


def _naive(qi: np.ndarray, a: np.ndarray, y: np.ndarray, w_row: np.ndarray, n_q: int, n_p: int) -> np.ndarray:
    """Per-query influence values (n_q, n_p) of each prompt's logged mean (the naive average)."""
    n = len(y)
    onehot = np.zeros((n, n_p))
    onehot[np.arange(n), a] = 1.0
    Nw = onehot * w_row[:, None]
    B = (Nw * y[:, None]).sum(axis=0) / np.maximum(Nw.sum(axis=0), 1e-300)
    share = Nw.sum(axis=0) / w_row.sum()
    rows = B[None, :] + onehot * (y[:, None] - B[None, :]) / np.maximum(share, 1e-300)[None, :]
    num = np.zeros((n_q, n_p))
    np.add.at(num, qi, rows * w_row[:, None])
    return num / np.bincount(qi, weights=w_row, minlength=n_q)[:, None]


def _bias_aware(dr: np.ndarray, naive: np.ndarray) -> np.ndarray:
    """Per prompt, ``dr + lam (naive - dr)`` with the ``lam`` that minimizes the estimated mean squared error:
    the logged mean is biased by confounding by ``b``, the doubly robust estimate is not but is noisier;
    ``lam = (Var U - Cov(U, B)) / (Var(B - U) + b^2)``, ``b^2`` estimated as ``max(0, (B - U)^2 - Var(B - U))``.
    Without detectable bias this leans on the precise logged mean; where the logs are confounded
    (a difference between the two far beyond its noise) it is the doubly robust estimate."""
    out = dr.copy()
    for j in range(dr.shape[1]):
        u, b = dr[:, j], naive[:, j]
        ok = np.isfinite(u) & np.isfinite(b)
        if ok.sum() < 3:
            continue
        u, b = u[ok], b[ok]
        d = b - u
        var_d = d.var(ddof=1) / len(d)
        bias2 = max(0.0, d.mean() ** 2 - var_d)
        lam = (u.var(ddof=1) - np.cov(u, b)[0, 1]) / len(d) / max(var_d + bias2, 1e-300)
        lam = float(np.clip(lam, 0.0, 1.0))
        out[ok, j] = u + lam * d
    return out


def _choose(psi: np.ndarray, cand: np.ndarray, prompt_ids: Sequence[str], n_rows: np.ndarray,
            naive: np.ndarray, y: np.ndarray, evidence: str, method: str, source: str | None,
            excluded: dict[str, str], cfg: StaticChoiceConfig) -> StaticChoice:
    z1 = NormalDist().inv_cdf(cfg.level)
    z2 = NormalDist().inv_cdf(0.975)  # the reported two-sided 95% intervals
    lo, hi = float(np.min(y)), float(np.max(y))
    values = []
    for j in cand:
        col = psi[:, j]
        ok = np.isfinite(col)
        m = float(col[ok].mean())
        se = float(col[ok].std(ddof=1) / np.sqrt(ok.sum())) if ok.sum() > 1 else float("inf")
        values.append(PromptValue(int(j), str(prompt_ids[j]), float(np.clip(m, lo, hi)), se,
                                  float(np.clip(m - z2 * se, lo, hi)), float(np.clip(m + z2 * se, lo, hi)),
                                  m - z1 * se, int(n_rows[j]), float(naive[j])))
    if evidence == MEASURED:  # every candidate measured on the same queries: the best mean, nothing to estimate
        best = max(values, key=lambda v: (v.value, v.lcb))
        contenders = _contenders(psi, best, values, z1)
        return StaticChoice(best.index, best.prompt_id, evidence, method, source, values, contenders, cfg.level,
                            excluded, (lo, hi), "measured")
    rank = {"eb": dict(zip((v.index for v in values), _shrunk(values))),
            "lcb": {v.index: v.lcb for v in values}, "point": {v.index: v.value for v in values}}[cfg.rule]
    best = max(values, key=lambda v: (rank[v.index], v.lcb))
    contenders = _contenders(psi, best, values, z1)
    most_logged = max(values, key=lambda v: (v.n_rows, v.lcb))
    top_mean = max(values, key=lambda v: (v.naive_mean, v.n_rows))
    reason = "best estimate"
    ahead_z = cfg.ahead_z if source == "logged" else cfg.ahead_z_estimated
    if cfg.keep_logged and most_logged.index in contenders:
        best, reason = most_logged, "most logged"  # the logs cannot show a better prompt than the one run most
        if (cfg.keep_logged_mean and top_mean.index in contenders and top_mean.index != most_logged.index
                and _worse(psi, top_mean.index, most_logged.index, ahead_z)):
            best, reason = top_mean, "best logged mean"  # ... but the estimates put the top mean ahead of it
    elif cfg.keep_logged_mean and top_mean.index in contenders:
        best, reason = top_mean, "best logged mean"  # the logs cannot show the plain average's choice worse
    contenders = [best.index] + [i for i in contenders if i != best.index]
    return StaticChoice(best.index, best.prompt_id, evidence, method, source, values, contenders, cfg.level, excluded,
                        (lo, hi), reason)


def _contenders(psi: np.ndarray, best: PromptValue, values: list[PromptValue], z: float) -> list[int]:
    """The best first, then every candidate not shown worse than it (paired, one-sided), by value."""
    return [best.index] + [v.index for v in sorted(values, key=lambda v: -v.value)
                           if v.index != best.index and not _worse(psi, best.index, v.index, z)]


def _shrunk(values: list[PromptValue]) -> list[float]:
    """Empirical-Bayes posterior means: each value shrunk toward the candidates' mean by tau^2 / (tau^2 + se^2),
    tau^2 the variance of the values less their mean squared standard error (method of moments)."""
    m = np.array([v.value for v in values])
    se2 = np.array([v.se for v in values]) ** 2
    if len(m) < 3 or not np.isfinite(se2).all():
        return list(m)
    tau2 = max(float(np.var(m, ddof=1) - se2.mean()), 1e-12)
    return list(m.mean() + tau2 / (tau2 + se2) * (m - m.mean()))


def _worse(psi: np.ndarray, best: int, other: int, z: float) -> bool:
    """Is ``other`` shown worse than ``best`` (one-sided, paired by query)?"""
    d = psi[:, best] - psi[:, other]
    d = d[np.isfinite(d)]
    return len(d) >= 2 and d.mean() - z * d.std(ddof=1) / np.sqrt(len(d)) > 0


__all__ = ["StaticChoice", "StaticChoiceConfig", "PromptValue", "choose_static"]

