"""Torch nuisances: ridge matches scikit-learn, grouped CV, MLP learns, multi-output wrapping, the registry."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from cpo_engine.causal._folds import fold_ids
from cpo_engine.causal.nuisances import fit_nuisance, make_nuisance, nuisance_names, registered_name
from cpo_engine.causal.nuisances.mlp import TorchMLP
from cpo_engine.causal.nuisances.ridge import TorchRidge
from cpo_engine.exceptions import ConfigError


def _data(n=400, d=5, k=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * rng.uniform(0.5, 3, size=d) + 2.0
    Y = X @ rng.normal(size=(d, k)) + rng.normal(size=(n, k))
    return X, Y


@pytest.mark.parametrize("alpha", [1e-6, 0.3, 30.0])
@pytest.mark.parametrize("weighted", [False, True])
def test_torch_ridge_matches_sklearn_fixed_alpha(alpha, weighted):
    X, Y = _data()
    w = np.random.default_rng(1).uniform(0.2, 2, len(X)) if weighted else None
    ours = TorchRidge(alpha=alpha, device="cpu").fit(X, Y, sample_weight=w)
    ref = Ridge(alpha=alpha).fit(X, Y, sample_weight=w)
    np.testing.assert_allclose(ours.coef_, ref.coef_.T, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours.predict(X), ref.predict(X), rtol=1e-8, atol=1e-10)


def test_torch_ridge_1d_target_and_cv_choice():
    X, Y = _data(k=1)
    m = TorchRidge(device="cpu").fit(X, Y[:, 0])
    assert m.predict(X).shape == (len(X),) and m.alpha_.shape == (1,)
    rng = np.random.default_rng(0)
    noise_only = TorchRidge(device="cpu").fit(X, rng.normal(size=len(X)))
    assert noise_only.alpha_[0] > m.alpha_[0]


def test_grouped_cv_picks_larger_penalty_than_row_cv_with_duplicated_rows():
    rng = np.random.default_rng(2)
    Xg = rng.normal(size=(60, 20))
    yg = Xg[:, 0] * 0.3 + rng.normal(size=60)
    groups = np.repeat(np.arange(60), 8)
    X, y = Xg[groups], yg[groups] + rng.normal(size=480) * 0.05
    grouped = TorchRidge(device="cpu").fit(X, y, groups=groups).alpha_[0]
    rows = TorchRidge(device="cpu").fit(X, y).alpha_[0]
    assert grouped > rows


def test_fold_ids_keep_groups_together():
    groups = np.repeat(np.arange(50), 3)
    ids = fold_ids(len(groups), 5, groups, 0)
    for g in range(50):
        assert len(set(ids[groups == g])) == 1
    assert set(ids) == set(range(5))


def test_mlp_learns_nonlinear_function():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1500, 3))
    y = np.sin(2 * X[:, 0]) + X[:, 1] ** 2
    m = TorchMLP(hidden=(32,), max_epochs=40, device="cpu").fit(X[:1000], y[:1000])
    pred = m.predict(X[1000:])
    r2 = 1 - np.mean((pred - y[1000:]) ** 2) / np.var(y[1000:])
    assert pred.shape == (500,) and r2 > 0.7


def test_single_output_sklearn_model_wrapped_for_multi_output():
    X, Y = _data(n=200)
    m = fit_nuisance(make_nuisance("hgb"), X, Y, None)
    assert m.predict(X).shape == (200, 3)


def test_make_nuisance_rejects_unknown_names():
    with pytest.raises(ConfigError, match="unknown nuisance 'boosted-magic'.*registered: ridge"):
        make_nuisance("boosted-magic")
    with pytest.raises(ConfigError, match="did you mean 'ridge'"):
        make_nuisance("rigde")
    with pytest.raises(ConfigError, match="fit\\(\\) and predict\\(\\)"):
        make_nuisance(object())


def test_registry_builds_every_name_it_lists_and_knows_its_classes():
    assert nuisance_names() == ("ridge", "mlp", "hgb", "lgbm", "cuml_ridge")
    for name in ("ridge", "mlp", "hgb"):  # lgbm and cuml_ridge need their extras
        m = make_nuisance(name, random_state=3, device="cpu")
        assert hasattr(m, "fit") and hasattr(m, "predict")
    assert registered_name(TorchRidge()) == "ridge" and registered_name(TorchMLP()) == "mlp"
    assert registered_name(make_nuisance("hgb")) is None  # third-party: not saved with a model

