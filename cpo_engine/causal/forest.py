"""Forest final stage that delegates to econml ``CausalForestDML`` (the paper's estimator), CPU only.

For comparison with :class:`~cpo_engine.causal.CausalRewardModel`: same inputs, same grouped folds,
same nuisance names. It has no linear head, so batched search cannot score with it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cpo_engine.causal._checks import as_float_array, check_fit_inputs, make_folds
from cpo_engine.causal.nuisances import make_nuisance
from cpo_engine.exceptions import ConfigError, NotFittedError


class CausalForestRewardModel:
    """econml ``CausalForestDML`` behind the reward-model interface.

    Parameters
    ----------
    model_y, model_t : str or estimator
        Nuisances as in :class:`~cpo_engine.causal.CausalRewardModel` (torch models run on CPU here).
    cv : int or list of (train, test)
        Cross-fitting folds, grouped by query.
    n_estimators : int
        Trees (econml requires a multiple of 4 with its default subforest size).
    min_samples_leaf : int
        Minimum rows per leaf.
    random_state : int
        Seed.
    n_jobs : int
        Parallel jobs for the forest.
    """

    def __init__(self, model_y: Any = "ridge", model_t: Any = "ridge", cv: Any = 5,
                 n_estimators: int = 100, min_samples_leaf: int = 5, random_state: int = 0,
                 n_jobs: int = 1) -> None:
        self.model_y = model_y
        self.model_t = model_t
        self.cv = cv
        self.n_estimators = n_estimators
        self.min_samples_leaf = min_samples_leaf
        self.random_state = random_state
        self.n_jobs = n_jobs

    def fit(self, Y: Any, T: Any, *, X: Any, groups: Any = None, sample_weight: Any = None,
            t_ref: Any = None) -> "CausalForestRewardModel":
        """Fit econml ``CausalForestDML`` with the same grouped folds; returns self."""
        import econml.dml as econml_dml
        Y, T, X, groups, w = check_fit_inputs(Y, T, X, groups, sample_weight)
        folds = make_folds(self.cv, len(Y), groups, self.random_state)
        self.model_ = econml_dml.CausalForestDML(
            model_y=make_nuisance(self.model_y, self.random_state, "cpu"),
            model_t=make_nuisance(self.model_t, self.random_state, "cpu"),
            cv=folds, n_estimators=self.n_estimators, min_samples_leaf=self.min_samples_leaf,
            random_state=self.random_state, n_jobs=self.n_jobs)
        self.model_.fit(Y, T, X=X, sample_weight=None if sample_weight is None else w)
        self.t_ref_ = T.mean(0) if t_ref is None else np.asarray(t_ref, np.float64)
        self.d_t_ = T.shape[1]
        return self

    def _check(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError(type(self).__name__)

    def const_marginal_effect(self, X: Any) -> np.ndarray:
        """``theta(X)``: (n, d_T)."""
        self._check()
        return np.asarray(self.model_.const_marginal_effect(as_float_array(X, "X", (2,)))).reshape(len(X), -1)

    def effect(self, X: Any, T0: Any = 0.0, T1: Any = 1.0) -> np.ndarray:
        """Effect of moving from ``T0`` to ``T1``: (n,)."""
        theta = self.const_marginal_effect(X)
        dt = np.broadcast_to(np.asarray(T1, np.float64) - np.asarray(T0, np.float64), theta.shape)
        return (theta * dt).sum(1)

    def effect_interval(self, X: Any, T0: Any = 0.0, T1: Any = 1.0, *, alpha: float = 0.05):
        """econml's (bootstrap-of-little-bags) interval of :meth:`effect`."""
        self._check()
        X = as_float_array(X, "X", (2,))
        t0 = np.broadcast_to(np.asarray(T0, np.float64), (len(X), self.d_t_))
        t1 = np.broadcast_to(np.asarray(T1, np.float64), (len(X), self.d_t_))
        return self.model_.effect_interval(X, T0=t0, T1=t1, alpha=alpha)

    def effect_grid(self, X: Any, T: Any) -> np.ndarray:
        """Effect of each candidate vs ``t_ref_`` on each query: (n_q, n_c)."""
        theta = self.const_marginal_effect(X)
        return theta @ (as_float_array(T, "T", (2,)) - self.t_ref_).T

    def linear_head(self) -> None:
        raise ConfigError("CausalForestRewardModel has no linear head: batched search needs "
                          "CausalRewardModel (linear in phi(X))")
