"""Paired-design effect estimation: partially linear DML on score differences, FDR, heterogeneity.

Model (one ``(task, model)`` cell, unit ``i`` = one edit on one query)::

    dY_i = D_i . theta + g(X_i) + eps_i,      E[eps_i | D_i, X_i] = 0
    D_i  = e(X_i) + v_i                        (e: the generalized propensity of the edit)

``dY`` is the child's minus the parent's score on the same query (the query's own difficulty
cancels), ``D`` the signed edit representation (families, surface changes or motifs), ``X`` what
the edit may be confounded with: the parent prompt (its quality, length and families) and the query
(the parent's score on it, its length). ``g`` and ``e`` are cross-fitted by the causal room's fold
runner (:func:`cpo_engine.causal._crossfit.run_folds`, folds grouped by query from
:func:`cpo_engine.causal._folds.fold_ids`, learners from
:func:`cpo_engine.causal.nuisances.make_nuisance`); the final stage regresses the ``dY`` residual on
the ``D`` residuals (Robinson / Chernozhukov et al. 2018: Neyman-orthogonal, so first-order errors
in ``g`` or ``e`` do not bias ``theta``: doubly robust). It is the causal model's final stage with a
constant ``phi`` (:func:`cpo_engine.causal.inference.fit_final`), so standard errors are the same
cluster-robust sandwich by query (CR1); optionally a delete-one-prompt jackknife also counts the luck
of *which* prompts were edited.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

from cpo_engine.exceptions import NotFittedError


def _learner_spec(spec: Any) -> Any:
    """A nuisance spec for the causal fold worker: ``"linear"`` is scikit-learn's ``Ridge(alpha=1)``."""
    if spec == "linear":
        from sklearn.linear_model import Ridge

        return Ridge(alpha=1.0)
    return spec


def crossfit_residuals(
    Y: np.ndarray, D: np.ndarray, X: np.ndarray, groups: np.ndarray, sample_weight: np.ndarray,
    learner: Any = "linear", cv: int = 5, seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold residuals ``Y - g(X)`` and ``D - e(X)``, folds grouped by ``groups``.

    With fewer groups than ``cv`` the number of folds drops to the number of groups (at least 2);
    one group only (a trace without per-query scores) falls back to row folds.
    """
    from cpo_engine.causal._crossfit import assemble, run_folds
    from cpo_engine.causal._folds import fold_ids, folds_from_ids

    n_groups = len(np.unique(groups))
    k = min(cv, n_groups) if n_groups >= 2 else min(cv, len(Y))
    if k < 2:
        raise ValueError("cross-fitting needs at least 2 units")
    ids = fold_ids(len(Y), k, groups if n_groups >= 2 else None, seed)
    if len(np.unique(ids)) < 2:  # every group hashed into one fold (2-3 queries): deal them out round-robin
        ids = np.unique(groups, return_inverse=True)[1] % k
    folds = folds_from_ids(ids, k)
    D2 = D.reshape(len(D), -1)
    # The nuisances' own inner CV (torch ridge) is not grouped here: "groups" stays out of the data.
    data = {"X": X, "Y": Y, "T": D2, "groups": None, "w": sample_weight}
    spec = _learner_spec(learner)
    y_pred, d_pred = assemble(run_folds(data, folds, spec, spec, seed, "cpu"), len(Y), D2.shape[1])
    return Y - y_pred, D - d_pred.reshape(D.shape)


def independent_columns(R: np.ndarray, w: np.ndarray, order: np.ndarray, tol: float = 1e-3) -> np.ndarray:
    """Columns of ``R`` to keep, greedily in ``order``: a column is dropped (aliased) when less than
    ``tol`` of its weighted variance is left after projecting it on the columns already kept."""
    keep: list[int] = []
    G = (R * w[:, None]).T @ R
    for j in order:
        if G[j, j] <= 1e-12 * max(float(w.sum()), 1.0):
            continue
        if keep:
            Gkk, gkj = G[np.ix_(keep, keep)], G[keep, j]
            left = G[j, j] - gkj @ np.linalg.solve(Gkk, gkj)
            if left < tol * G[j, j]:
                continue
        keep.append(int(j))
    mask = np.zeros(R.shape[1], dtype=bool)
    mask[keep] = True
    return mask


def final_stage(R: np.ndarray, y: np.ndarray, w: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares of ``y`` on the columns of ``R`` with the CR1 covariance clustered by
    ``groups``: the causal final stage (:func:`~cpo_engine.causal.inference.fit_final`) with
    ``phi = 1``, so the edit effects and the reward model share one estimator and one sandwich.

    Returns ``theta`` (p,) and its covariance (p, p).
    """
    from cpo_engine.causal.inference import fit_final

    fit = fit_final(np.ones((len(y), 1)), R, y, groups=groups, sample_weight=w, alpha=0.0, cov_type="cluster")
    return fit.coef[0], fit.cov


class PairedEditDML:
    """Effect of signed edit representations on the paired score change, by cross-fitted DML.

    Estimand: ``theta_j``, the change in expected score on a query from adding one unit of edit
    feature ``j`` (e.g. adding a step-by-step instruction) to a parent prompt, holding the other
    edit features, the parent and the query fixed (arXiv 2605.26655's edit-family effects, estimated
    here in a paired, propensity-adjusted design).

    Parameters
    ----------
    learner : str or estimator
        Nuisance model for ``g`` and ``e``: ``"linear"`` (scikit-learn ridge), or any name or
        estimator :func:`cpo_engine.causal.nuisances.make_nuisance` accepts (``"hgb"``, ``"lgbm"``,
        ``"ridge"``, ...).
    cv : int
        Cross-fitting folds (grouped by query).
    marginal : bool
        False: one joint final regression (each effect adjusted for the others). True: one final
        regression per column (for many, overlapping features such as n-gram motifs).
    alias_tol : float
        Share of a column's residual variance that must be left after the columns kept before it;
        below that the column is *aliased* and gets no estimate (joint mode only).
    random_state : int
        Seed of the fold assignment.
    """

    def __init__(self, learner: Any = "linear", cv: int = 5, marginal: bool = False, alias_tol: float = 1e-3,
                 random_state: int = 0) -> None:
        self.learner = learner
        self.cv = cv
        self.marginal = marginal
        self.alias_tol = alias_tol
        self.random_state = random_state

    def fit(self, Y: np.ndarray, D: np.ndarray, X: np.ndarray, *, groups: np.ndarray,
            sample_weight: np.ndarray | None = None, priority: np.ndarray | None = None) -> "PairedEditDML":
        """Cross-fit the nuisances and solve the final stage; returns ``self``.

        ``priority`` orders columns for the aliasing check (first kept first; default: as given).
        """
        Y, D, X = (np.asarray(a, dtype=np.float64) for a in (Y, D, X))
        if D.ndim != 2 or len(D) != len(Y) or len(X) != len(Y) or len(groups) != len(Y):
            raise ValueError(f"PairedEditDML.fit: Y {Y.shape}, D {D.shape}, X {X.shape} and groups "
                             f"({len(groups)},) must have the same number of rows, D 2-D")
        if self.cv < 2:
            raise ValueError(f"The 'cv' parameter of PairedEditDML must be an int >= 2, got {self.cv}")
        w = np.ones(len(Y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        self.y_res_, self.d_res_ = crossfit_residuals(Y, D, X, np.asarray(groups), w, self.learner, self.cv,
                                                      self.random_state)
        self.groups_, self.weight_ = np.asarray(groups), w
        order = np.arange(D.shape[1]) if priority is None else np.asarray(priority)
        # Aliasing is decided on the treatments themselves first: residualizing can make columns
        # look independent through nuisance misfit alone, which would "identify" them by accident.
        Dc = D - (w @ D) / w.sum()
        if self.marginal:
            raw_ok = (Dc**2 * w[:, None]).sum(0) > 1e-12 * w.sum()
        else:
            raw_ok = independent_columns(Dc, w, order, self.alias_tol)
        self._final(order[raw_ok[order]])
        return self

    def _final(self, order: np.ndarray) -> None:
        R, y, w = self.d_res_, self.y_res_, self.weight_
        p = R.shape[1]
        self.coef_, self.stderr_ = np.full(p, np.nan), np.full(p, np.nan)
        self.identified_ = np.zeros(p, dtype=bool)
        self.n_clusters_ = len(np.unique(self.groups_))
        cols = [[j] for j in order] if self.marginal else [list(np.flatnonzero(
            independent_columns(R, w, order, self.alias_tol)))]
        for keep in cols:
            Rk = R[:, keep]
            G = (Rk * w[:, None]).T @ Rk
            if len(keep) == 0 or np.linalg.matrix_rank(G) < len(keep) or G.trace() <= 0:
                continue
            theta, cov = final_stage(Rk, y, w, self.groups_)
            self.coef_[keep], self.stderr_[keep] = theta, np.sqrt(np.clip(np.diag(cov), 0, None))
            self.identified_[keep] = True

    def _check(self) -> None:
        if not hasattr(self, "coef_"):
            raise NotFittedError(type(self).__name__)

    def jackknife_stderr(self, memberships: list[np.ndarray]) -> np.ndarray:
        """Delete-one-group jackknife standard errors of the final stage (nuisances held fixed).

        ``memberships[a]`` is a boolean mask of the units that involve group ``a`` (e.g. every unit
        whose edit has prompt ``a`` as parent or child). NaN where fewer than 3 groups are usable.
        The number of delete-one fits behind each column is kept in ``jackknife_n_``: intervals and
        p-values from these errors use t quantiles with ``jackknife_n_ - 1`` degrees of freedom
        (calibration in docs/edits.md).
        """
        self._check()
        R, y, w = self.d_res_, self.y_res_, self.weight_
        out = np.full(R.shape[1], np.nan)
        self.jackknife_n_ = np.full(R.shape[1], np.nan)
        cols = [[j] for j in np.flatnonzero(self.identified_)] if self.marginal else [
            list(np.flatnonzero(self.identified_))]
        for keep in cols:
            if not keep:
                continue
            Rk = R[:, keep]
            G, b = (Rk * w[:, None]).T @ Rk, Rk.T @ (w * y)
            thetas = []
            for m in memberships:
                Rm = Rk[m]
                Gm, bm = G - (Rm * w[m, None]).T @ Rm, b - Rm.T @ (w[m] * y[m])
                if np.linalg.matrix_rank(Gm) == len(keep):
                    thetas.append(np.linalg.solve(Gm, bm))
            if len(thetas) >= 3:
                T = np.asarray(thetas)
                out[keep] = np.sqrt((len(T) - 1) / len(T) * ((T - T.mean(0)) ** 2).sum(0))
                self.jackknife_n_[keep] = len(T)
        return out


def bh_qvalues(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values); NaN entries are ignored and stay NaN."""
    p = np.asarray(p, dtype=np.float64)
    q = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if len(ok) == 0:
        return q
    order = ok[np.argsort(p[ok])]
    ranked = p[order] * len(ok) / np.arange(1, len(ok) + 1)
    q[order] = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
    return q


def two_sided_p(effect: np.ndarray, se: np.ndarray, df: np.ndarray | None = None) -> np.ndarray:
    """Two-sided p-values of ``effect / se``: Student t with ``df`` degrees of freedom where ``df`` is
    finite, normal elsewhere (and everywhere without ``df``); NaN where the se is missing or zero."""
    z = np.divide(effect, se, out=np.full(np.shape(effect), np.nan), where=np.asarray(se) > 0)
    p = 2 * stats.norm.sf(np.abs(z))
    if df is not None:
        df = np.broadcast_to(np.asarray(df, dtype=np.float64), np.shape(z))
        t = np.isfinite(df) & (df > 0)
        p = np.where(t, 2 * stats.t.sf(np.abs(z), np.where(t, df, 1.0)), p)
    return p


def quantile(level: float, df: np.ndarray | None = None) -> np.ndarray:
    """Two-sided ``level`` quantile: t with ``df`` where finite and > 0, normal elsewhere."""
    zq = stats.norm.ppf(0.5 + level / 2)
    if df is None:
        return np.asarray(zq)
    df = np.asarray(df, dtype=np.float64)
    t = np.isfinite(df) & (df > 0)
    return np.where(t, stats.t.ppf(0.5 + level / 2, np.where(t, df, 1.0)), zq)


def cochran_q(effect: np.ndarray, se: np.ndarray) -> dict[str, float]:
    """Test that ``k`` independent estimates share one effect (Cochran's Q, chi2 with k-1 df).

    Returns ``Q``, ``df``, ``p_value``, ``I2`` (share of variation beyond chance), the fixed-effect
    ``pooled`` estimate and its ``pooled_se``; NaN when fewer than 2 usable estimates.
    """
    ok = np.isfinite(effect) & np.isfinite(se) & (np.asarray(se) > 0)
    e, s = np.asarray(effect)[ok], np.asarray(se)[ok]
    nan = {"Q": np.nan, "df": float(len(e) - 1), "p_value": np.nan, "I2": np.nan,
           "pooled": np.nan, "pooled_se": np.nan}
    if len(e) == 0:
        return nan
    w = 1.0 / s**2
    pooled = float((w * e).sum() / w.sum())
    nan.update(pooled=pooled, pooled_se=float(np.sqrt(1.0 / w.sum())))
    if len(e) < 2:
        return nan
    Q = float((w * (e - pooled) ** 2).sum())
    df = len(e) - 1
    nan.update(Q=Q, p_value=float(stats.chi2.sf(Q, df)), I2=float(max(0.0, (Q - df) / Q)) if Q > 0 else 0.0)
    return nan


__all__ = ["PairedEditDML", "bh_qvalues", "cochran_q", "crossfit_residuals", "final_stage",
           "independent_columns", "quantile", "two_sided_p"]
