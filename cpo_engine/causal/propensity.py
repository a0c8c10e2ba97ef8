"""Cross-fitted propensity model: P(logged prompt | query features), for off-policy evaluation of logs
that do not record the logging policy's probabilities.

The folds are the DML fit's (pass ``folds=model.folds_``, or the same ``cv``/``random_state`` and
query groups, which :func:`~cpo_engine.causal._checks.make_folds` turns into the same folds), and they
run through the same fold worker as the DML nuisances (:func:`cpo_engine.causal._crossfit.run_folds`,
serial or Ray): the propensity of a logged row comes from a model that never saw its query.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator

from cpo_engine.causal._checks import as_float_array, make_folds
from cpo_engine.exceptions import ConfigError, DataError, NotFittedError


class ProbabilityRegressor(BaseEstimator):
    """A classifier dressed as a multi-output regressor: ``fit(X, one_hot)``, ``predict(X)`` -> class
    probabilities (n, n_classes), with 0 for classes absent from the training rows. This is the shape
    of a DML nuisance for ``E[T | X]`` with T the one-hot prompt, so the cross-fitting worker runs it.

    Parameters
    ----------
    kind : {"logistic", "hgb"}
        Multinomial logistic regression on standardized features, or gradient-boosted trees.
    C : float
        Inverse L2 penalty of the logistic model.
    random_state : int
        Seed of the boosted trees.
    """

    multi_output: ClassVar[bool] = True

    def __init__(self, kind: str = "logistic", C: float = 1.0, random_state: int = 0) -> None:
        self.kind = kind
        self.C = C
        self.random_state = random_state

    def fit(self, X: np.ndarray, Y: np.ndarray) -> ProbabilityRegressor:
        Y = np.asarray(Y)
        self.n_classes_ = Y.shape[1]
        labels = Y.argmax(1)
        self.classes_ = np.unique(labels)
        if len(self.classes_) == 1:
            self.model_ = None
            return self
        self.model_ = self._make().fit(np.asarray(X, np.float64), labels)
        return self

    def _make(self) -> Any:
        if self.kind == "hgb":
            from sklearn.ensemble import HistGradientBoostingClassifier

            return HistGradientBoostingClassifier(max_iter=100, early_stopping=True, random_state=self.random_state)
        if self.kind != "logistic":
            raise ConfigError(f"propensity model must be 'logistic' or 'hgb', got '{self.kind}'")
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=500))

    def predict(self, X: np.ndarray) -> np.ndarray:
        if not hasattr(self, "classes_"):
            raise NotFittedError(type(self).__name__)
        out = np.zeros((len(X), self.n_classes_))
        if self.model_ is None:
            out[:, self.classes_[0]] = 1.0
        else:
            out[:, self.classes_] = self.model_.predict_proba(np.asarray(X, np.float64))
        return out


class PropensityModel:
    """Cross-fitted model of the logged prompt given the query features.

    Parameters
    ----------
    kind : {"logistic", "hgb"}
        The classifier (:class:`ProbabilityRegressor`).
    C : float
        Inverse L2 penalty of the logistic model.
    cv : int
        Folds when none are given; with the same ``random_state`` and query groups these are the
        folds a :class:`~cpo_engine.causal.CausalRewardModel` fit on the same rows uses.
    random_state : int
        Seed of the folds (and of the boosted trees).
    backend : {"serial", "ray"}
        Where the folds run (the DML fold worker).

    Attributes
    ----------
    oof_ : ndarray (n, n_prompts)
        Out-of-fold probabilities of every prompt for every fitted row (after smoothing).
    smoothing_ : float
        Weight of the uniform distribution mixed into every prediction, chosen from
        :data:`SMOOTHING_GRID` by out-of-fold log-likelihood. A router that explores uniformly
        (epsilon-greedy) has such a floor, which a logistic model alone cannot represent: without it
        the model puts near-zero probability on choices the router still makes.
    models_ : list of ProbabilityRegressor
        One per fold; :meth:`predict_proba` on new queries averages them.
    """

    def __init__(self, kind: str = "logistic", C: float = 1.0, cv: int = 5, random_state: int = 0,
                 backend: str = "serial") -> None:
        self.kind = kind
        self.C = C
        self.cv = cv
        self.random_state = random_state
        self.backend = backend

    def fit(self, X: Any, a: Any, *, n_prompts: int, groups: Any = None, folds: Any = None) -> PropensityModel:
        """Cross-fit on rows (query features ``X``, logged prompt index ``a``); returns self.

        ``folds``: explicit (train, test) pairs, e.g. ``causal_model.folds_`` of a fit on the same rows.
        """
        from cpo_engine.causal._crossfit import assemble, run_folds

        X = as_float_array(X, "X", (2,))
        a = np.asarray(a, dtype=np.int64)
        if len(a) != len(X) or (len(a) and (a.min() < 0 or a.max() >= n_prompts)):
            raise DataError(f"propensity model needs one prompt index in [0, {n_prompts}) per row of X")
        self.folds_ = folds if folds is not None else make_folds(self.cv, len(a), groups, self.random_state)
        one_hot = np.zeros((len(a), n_prompts))
        one_hot[np.arange(len(a)), a] = 1.0
        # the worker fits E[Y|X] and E[T|X]; Y is a dummy here (a constant model), T the one-hot prompt
        from sklearn.dummy import DummyRegressor

        data = {"X": X, "Y": np.zeros(len(a)), "T": one_hot}
        results = run_folds(data, self.folds_, DummyRegressor(), ProbabilityRegressor(self.kind, self.C, self.random_state),
                            self.random_state, "cpu", self.backend)
        _, raw = assemble(results, len(a), n_prompts)
        self.smoothing_ = _best_smoothing(raw, a)
        self.oof_ = _smooth(raw, self.smoothing_)
        self.models_ = [r.model_t for r in results]
        self.n_prompts_, self.a_ = n_prompts, a
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """P(prompt | query) on new queries: (n, n_prompts), the fold models' average."""
        if not hasattr(self, "models_"):
            raise NotFittedError(type(self).__name__)
        X = as_float_array(X, "X", (2,))
        return _smooth(np.mean([m.predict(X) for m in self.models_], axis=0), self.smoothing_)

    def logged_propensity(self) -> np.ndarray:
        """Out-of-fold probability of each fitted row's own logged prompt."""
        return self.oof_[np.arange(len(self.a_)), self.a_]

    def diagnostics(self) -> dict[str, float]:
        """Out-of-fold log loss against the marginal prompt frequencies (what the query features add)."""
        eps = 1e-12
        p = np.clip(self.logged_propensity(), eps, 1)
        freq = np.bincount(self.a_, minlength=self.n_prompts_) / len(self.a_)
        return {"log_loss": float(-np.log(p).mean()), "log_loss_marginal": float(-np.log(freq[self.a_]).mean()),
                "smoothing": self.smoothing_, "n_rows": len(self.a_)}


SMOOTHING_GRID = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)


def _smooth(P: np.ndarray, eps: float) -> np.ndarray:
    return (1 - eps) * P + eps / P.shape[1]


def _best_smoothing(oof: np.ndarray, a: np.ndarray) -> float:
    """The uniform mixing weight with the best out-of-fold log-likelihood of the logged prompts."""
    p = oof[np.arange(len(a)), a]
    loss = [-np.log(np.clip((1 - e) * p + e / oof.shape[1], 1e-300, None)).mean() for e in SMOOTHING_GRID]
    return float(SMOOTHING_GRID[int(np.argmin(loss))])


def propensity_features(X: np.ndarray, query_texts: list[str] | None) -> np.ndarray:
    """The propensity model's features: the query features X and, with ``query_texts``, each query's
    standardized log length and number count (routers often choose prompts by them, and an embedding's
    first principal components carry them poorly)."""
    X = np.asarray(X, dtype=np.float64)
    if query_texts is None:
        return X
    from cpo_engine.causal.evaluation import text_features

    f = text_features(list(query_texts))
    sd = f.std(0)
    return np.hstack([X, (f - f.mean(0)) / np.where(sd > 0, sd, 1.0)])


def overlap_by_prompt(propensity: np.ndarray, prompt_ids: list[str], min_propensity: float,
                      support_floor: float) -> list[dict[str, Any]]:
    """Per prompt, over queries: mean, 1st and 5th percentile of its propensity, the share of queries
    where it is clipped (below ``min_propensity``) and where it is off support (below ``support_floor``).

    ``propensity`` is (n_queries, n_prompts): P(prompt | query) under the logging policy.
    """
    P = np.asarray(propensity, dtype=np.float64)
    return [{"prompt_id": str(pid), "mean": float(P[:, j].mean()), "p01": float(np.quantile(P[:, j], 0.01)),
             "p05": float(np.quantile(P[:, j], 0.05)), "share_clipped": float(np.mean(P[:, j] < min_propensity)),
             "share_off_support": float(np.mean(P[:, j] < support_floor))} for j, pid in enumerate(prompt_ids)]


__all__ = ["SMOOTHING_GRID", "ProbabilityRegressor", "PropensityModel", "overlap_by_prompt", "propensity_features"]
