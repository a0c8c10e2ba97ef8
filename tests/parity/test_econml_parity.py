"""Parity with econml: same explicit folds and nuisance models give the same LinearDML estimates
(to 1e-6 relative), intervals and score; the forest delegate equals CausalForestDML itself."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.preprocessing import PolynomialFeatures

from cpo_engine.causal import CausalForestRewardModel, CausalRewardModel, TorchRidge
from cpo_engine.causal.synthetic import make_synthetic

econml_dml = pytest.importorskip("econml.dml")

RTOL = 1e-6


@pytest.fixture(scope="module")
def data():
    return make_synthetic(n_groups=120, rows_per_group=5, d_x=3, d_t=2, seed=7)


def _folds(groups, k=3):
    f = groups % k
    return [(np.flatnonzero(f != i), np.flatnonzero(f == i)) for i in range(k)]


def _pair(data, model_y, model_t, featurizer="linear", econml_featurizer=None):
    folds = _folds(data.groups)
    ours = CausalRewardModel(model_y=model_y, model_t=model_t, featurizer=featurizer, cv=folds,
                             final_alpha=0.0, cov_type="HC1", device="cpu")  # LinearDML's final stage is OLS
    ours.fit(data.Y, data.T, X=data.X, groups=data.groups)
    ref = econml_dml.LinearDML(model_y=model_y, model_t=model_t, featurizer=econml_featurizer, cv=folds,
                               random_state=0)
    ref.fit(data.Y, data.T, X=data.X)
    return ours, ref


def _close(a, b, rtol=RTOL):
    a, b = np.asarray(a, float), np.asarray(b, float)
    scale = np.maximum(np.abs(b), 1e-3 * np.abs(b).max())
    assert np.max(np.abs(a - b) / scale) < rtol


@pytest.mark.parametrize("nuisance", [LinearRegression(), Ridge(alpha=2.0), TorchRidge(alpha=2.0, device="cpu")],
                         ids=["ols", "sk_ridge", "torch_ridge"])
def test_linear_dml_parity(data, nuisance):
    ours, ref = _pair(data, nuisance, nuisance)
    _close(ours.coef_[0], np.ravel(ref.intercept_))
    _close(ours.coef_[1:].T, ref.coef_.reshape(2, 3))
    X = data.X[:40]
    _close(ours.const_marginal_effect(X), ref.const_marginal_effect(X).reshape(40, 2))
    T1 = data.T[:40]
    _close(ours.effect(X, T0=0.0, T1=T1), ref.effect(X, T0=np.zeros((40, 2)), T1=T1))
    lo, hi = ours.effect_interval(X, T0=0.0, T1=T1, alpha=0.1)
    rlo, rhi = ref.effect_interval(X, T0=np.zeros((40, 2)), T1=T1, alpha=0.1)
    _close(lo, rlo)
    _close(hi, rhi)
    _close(ours.score(data.Y, data.T, X=data.X), ref.score(data.Y, data.T, X=data.X))


def test_linear_dml_parity_poly2_featurizer(data):
    ours, ref = _pair(data, LinearRegression(), LinearRegression(), "poly2",
                      PolynomialFeatures(degree=2, include_bias=False))
    X = data.X[:30]
    _close(ours.const_marginal_effect(X), ref.const_marginal_effect(X).reshape(30, 2))
    lo, hi = ours.const_marginal_effect_interval(X)
    rlo, rhi = ref.const_marginal_effect_interval(X)
    _close(lo, np.reshape(rlo, (30, 2)))
    _close(hi, np.reshape(rhi, (30, 2)))


def test_forest_delegate_equals_econml(data):
    folds = _folds(data.groups)
    ours = CausalForestRewardModel(model_y=LinearRegression(), model_t=LinearRegression(), cv=folds,
                                   n_estimators=24, random_state=3)
    ours.fit(data.Y, data.T, X=data.X, groups=data.groups)
    ref = econml_dml.CausalForestDML(model_y=LinearRegression(), model_t=LinearRegression(), cv=folds,
                                     n_estimators=24, min_samples_leaf=5, random_state=3, n_jobs=1)
    ref.fit(data.Y, data.T, X=data.X)
    X = data.X[:20]
    np.testing.assert_allclose(ours.const_marginal_effect(X), ref.const_marginal_effect(X).reshape(20, 2),
                               rtol=1e-10)
