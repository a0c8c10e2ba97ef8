"""Non-causal reward model: outcome regression ``f(X, T)`` on the logged rows.

This is what Prompt-OIRL-style reward models and the AISteer360 fallback do. Under confounded
logging it learns the association between prompt and score, not the effect; it is here to compare
against, never used in place of the causal model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cpo_engine.causal._checks import as_float_array, check_fit_inputs
from cpo_engine.causal._params import ParamsMixin
from cpo_engine.causal.nuisances import fit_nuisance
from cpo_engine.exceptions import NotFittedError


class OutcomeRewardModel(ParamsMixin):
    """Correlational reward model ``f(X, T)`` with the causal model's interface.

    Parameters
    ----------
    model : estimator, optional
        Regressor on ``[X, T]``; default scikit-learn ``HistGradientBoostingRegressor``.
    random_state : int
        Seed of the default regressor.
    """

    def __init__(self, model: Any = None, random_state: int = 0) -> None:
        self.model = model
        self.random_state = random_state

    def fit(self, Y: Any, T: Any, *, X: Any, groups: Any = None, sample_weight: Any = None,
            t_ref: Any = None) -> "OutcomeRewardModel":
        """Fit ``f`` on ``[X, T] -> Y``; returns self (``groups`` is accepted and unused)."""
        from sklearn.base import clone
        from sklearn.ensemble import HistGradientBoostingRegressor

        Y, T, X, _, w = check_fit_inputs(Y, T, X, groups, sample_weight)
        base = HistGradientBoostingRegressor(max_iter=200, random_state=self.random_state) \
            if self.model is None else clone(self.model)
        self.model_ = fit_nuisance(base, np.hstack([X, T]), Y, None,
                                   None if sample_weight is None else w)
        self.t_ref_ = T.mean(0) if t_ref is None else np.asarray(t_ref, np.float64)
        self.n_features_in_, self.d_t_ = X.shape[1], T.shape[1]
        return self

    def _check(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError(type(self).__name__)

    def predict(self, X: Any, T: Any) -> np.ndarray:
        """Predicted score of each row (n,)."""
        self._check()
        X, T = as_float_array(X, "X", (2,)), as_float_array(T, "T", (1, 2))
        T = np.broadcast_to(T, (len(X), self.d_t_)) if T.ndim == 1 else T
        return np.asarray(self.model_.predict(np.hstack([X, T])), dtype=np.float64)

    def effect(self, X: Any, T0: Any = 0.0, T1: Any = 1.0) -> np.ndarray:
        """``f(X, T1) - f(X, T0)``: (n,)."""
        X = as_float_array(X, "X", (2,))
        t0 = np.broadcast_to(np.asarray(T0, np.float64), (len(X), self.d_t_))
        t1 = np.broadcast_to(np.asarray(T1, np.float64), (len(X), self.d_t_))
        return self.predict(X, t1) - self.predict(X, t0)

    def effect_grid(self, X: Any, T: Any) -> np.ndarray:
        """``f(x_q, t_c) - f(x_q, t_ref)`` for every query and candidate: (n_q, n_c)."""
        X, T = as_float_array(X, "X", (2,)), as_float_array(T, "T", (2,))
        nq, nc = len(X), len(T)
        grid = self.predict(np.repeat(X, nc, axis=0), np.tile(T, (nq, 1))).reshape(nq, nc)
        return grid - self.predict(X, np.broadcast_to(self.t_ref_, (nq, self.d_t_)))[:, None]

    def score(self, Y: Any, T: Any, *, X: Any, sample_weight: Any = None) -> float:
        """Mean squared error of the predicted score (lower is better)."""
        Y, T, X, _, w = check_fit_inputs(Y, T, X, None, sample_weight)
        return float(np.average((Y - self.predict(X, T)) ** 2, weights=w))
