"""CausalRewardModel: recovery of a known effect, inference, refit, head, diagnostics, bad inputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from cpo_engine.causal import CausalDiagnosticWarning, CausalRewardModel, OutcomeRewardModel
from cpo_engine.causal.synthetic import make_synthetic
from cpo_engine.exceptions import ConfigError, DataError, NotFittedError


@pytest.fixture(scope="module")
def data():
    return make_synthetic(n_groups=300, rows_per_group=5, seed=1)


@pytest.fixture(scope="module")
def fitted(data):  # OLS final stage: the recovery and coverage tests below are about the unpenalized fit
    return CausalRewardModel(cv=3, final_alpha=0.0, device="cpu").fit(data.Y, data.T, X=data.X, groups=data.groups)


def test_recovers_known_coefficients_within_standard_errors(fitted, data):
    se = np.sqrt(np.diag(fitted.cov_)).reshape(fitted.coef_.shape)
    z = np.abs(fitted.coef_ - data.coef) / se
    assert z.max() < 4.5
    assert np.abs(fitted.coef_ - data.coef).max() < 0.2


def test_effect_matches_theta_and_interval_is_its_normal_interval(fitted, data):
    """Coverage itself is a Monte Carlo property: tests/test_calibration.py checks it over many fits."""
    from scipy.stats import norm

    X = data.X[:50]
    est = fitted.effect(X, T0=0.0, T1=np.ones(3))
    assert np.allclose(est, fitted.const_marginal_effect(X).sum(1))
    lo, hi = fitted.effect_interval(X, T0=0.0, T1=np.ones(3), alpha=0.01)
    se = fitted.effect_stderr(X, T0=0.0, T1=np.ones(3))
    np.testing.assert_allclose((hi - lo) / 2, norm.ppf(0.995) * se, rtol=1e-10)
    np.testing.assert_allclose((hi + lo) / 2, est, rtol=1e-10)  # OLS fit: center = point estimate
    v = np.hstack([np.ones((50, 1)), X])[:, :, None] * np.ones((1, 1, 3))
    v = v.reshape(50, -1)
    np.testing.assert_allclose(se, np.sqrt(np.einsum("ij,jk,ik->i", v, fitted.cov_, v)), rtol=1e-10)


def test_linear_head_agrees_with_effect_and_stderr(fitted, data):
    head = fitted.linear_head()
    Xq, Tc = data.X[:7], data.T[:5]
    est, se = head.effect(Xq, Tc)
    for c in range(5):
        t0 = np.broadcast_to(head.t_ref, (7, 3))
        assert np.allclose(est[:, c], fitted.effect(Xq, T0=t0, T1=Tc[c]))
        assert np.allclose(se[:, c], fitted.effect_stderr(Xq, T0=t0, T1=Tc[c]))
    assert np.allclose(fitted.effect_grid(Xq, Tc), est)


@pytest.mark.parametrize("cov_type", ["cluster", "HC1"])
def test_model_covariance_equals_statsmodels_on_its_residuals(data, cov_type):
    """The fitted model's cov_ (cluster-robust by query, or HC1 after refit_final) is statsmodels' covariance
    of the OLS of the kept Y residuals on phi (x) T residuals."""
    sm = pytest.importorskip("statsmodels.api")
    m = CausalRewardModel(cv=3, final_alpha=0.0, device="cpu").fit(data.Y, data.T, X=data.X, groups=data.groups)
    m.refit_final(cov_type=cov_type)
    phi = m.featurizer_.transform(data.X)
    F = (phi[:, :, None] * m.t_res_[:, None, :]).reshape(len(phi), -1)
    kw = {"cov_type": "cluster", "cov_kwds": {"groups": data.groups}} if cov_type == "cluster" else {"cov_type": "HC1"}
    ref = sm.OLS(m.y_res_, F).fit(**kw)
    np.testing.assert_allclose(m.coef_.reshape(-1), ref.params, rtol=1e-9)
    np.testing.assert_allclose(m.cov_, ref.cov_params(), rtol=1e-8, atol=1e-15)


def test_refit_final_reuses_nuisances(data):
    m = CausalRewardModel(cv=3, device="cpu").fit(data.Y, data.T, X=data.X, groups=data.groups)
    models = list(m.models_y_)
    m.refit_final(featurizer="constant")
    assert m.coef_.shape == (1, 3) and m.models_y_ == models
    m.refit_final(featurizer="poly2", final_alpha=1e-3)
    assert m.coef_.shape == (1 + 4 + 10, 3)


def test_explicit_folds_accepted_and_validated(data):
    codes = data.groups % 3
    folds = [(np.flatnonzero(codes != k), np.flatnonzero(codes == k)) for k in range(3)]
    m = CausalRewardModel(cv=folds, device="cpu").fit(data.Y, data.T, X=data.X, groups=data.groups)
    assert len(m.folds_) == 3
    bad = [(np.arange(0, 1000), np.arange(1000, 1500)), (np.arange(500, 1500), np.arange(0, 600))]
    with pytest.raises(ConfigError, match="exactly once|both train and test"):
        CausalRewardModel(cv=bad, device="cpu").fit(data.Y, data.T, X=data.X, groups=data.groups)
    split = [(np.arange(0, 752), np.arange(752, 1500)), (np.arange(752, 1500), np.arange(0, 752))]
    with pytest.raises(ConfigError, match="both train and test"):
        CausalRewardModel(cv=split, device="cpu").fit(data.Y, data.T, X=data.X, groups=data.groups)


def _bad(kind, d):
    Y, T, X, g = d.Y.copy(), d.T.copy(), d.X.copy(), d.groups
    if kind == "constant_y":
        Y[:] = 1.0
    elif kind == "constant_t":
        T[:, 1] = 0.5
    elif kind == "nan_x":
        X[7, 2] = np.nan
    elif kind == "lengths":
        T = T[:-3]
    elif kind == "few_queries":
        g = d.groups % 6
    return Y, T, X, g


@pytest.mark.parametrize("kind,match", [
    ("constant_y", "Y is constant"), ("constant_t", r"T columns \[1\] are constant"),
    ("nan_x", r"X has NaN.*\[7\]"), ("lengths", "T has 1497"), ("few_queries", "only 6 distinct queries"),
])
def test_bad_inputs_raise_clear_errors(data, kind, match):
    Y, T, X, g = _bad(kind, data)
    with pytest.raises(DataError, match=match):
        CausalRewardModel(cv=5, device="cpu").fit(Y, T, X=X, groups=g)


def test_not_fitted_says_call_fit():
    with pytest.raises(NotFittedError, match="call fit"):
        CausalRewardModel().const_marginal_effect(np.zeros((2, 3)))
    with pytest.raises(NotFittedError, match="call fit"):
        OutcomeRewardModel().predict(np.zeros((2, 3)), np.zeros((2, 1)))


def test_weak_overlap_warns_and_is_reported():
    d = make_synthetic(n_groups=200, rows_per_group=5, confounding=30.0, seed=3)
    with pytest.warns(CausalDiagnosticWarning, match="weak overlap"):
        m = CausalRewardModel(cv=3, device="cpu").fit(d.Y, d.T, X=d.X, groups=d.groups)
    diag = m.diagnostics_
    assert min(diag.overlap) < 0.05 and any("weak overlap" in w for w in diag.warnings)
    assert diag.n_groups == 200 and diag.n_folds == 3 and len(diag.r2_t) == 3


def test_diagnostics_of_clean_fit(fitted):
    d = fitted.diagnostics_
    assert d.warnings == []
    assert all(0.0 < v < 1.0 for v in d.r2_t) and d.r2_y > 0.1
    assert 0 < d.ess <= d.n_rows and np.isfinite(d.gram_condition)
    assert "OOF R2" in d.summary() and d.to_dict()["cov_type"] == "cluster"


def test_score_is_near_noise_variance_on_fresh_data(fitted):
    fresh = make_synthetic(n_groups=300, rows_per_group=5, seed=1)
    assert fitted.score(fresh.Y, fresh.T, X=fresh.X) < 1.5
    zero = CausalRewardModel(cv=3, device="cpu").fit(fresh.Y, fresh.T, X=fresh.X, groups=fresh.groups)
    zero.coef_ = np.zeros_like(zero.coef_)
    assert zero.score(fresh.Y, fresh.T, X=fresh.X) > fitted.score(fresh.Y, fresh.T, X=fresh.X)


def test_causal_beats_outcome_model_under_confounding():
    d = make_synthetic(n_groups=400, rows_per_group=5, d_x=3, d_t=2, confounding=2.0,
                       heterogeneity=0.0, seed=5)
    causal = CausalRewardModel(cv=3, device="cpu", featurizer="constant").fit(d.Y, d.T, X=d.X, groups=d.groups)
    naive = OutcomeRewardModel(random_state=0).fit(d.Y, d.T, X=d.X)
    X0 = d.X[::5][:100]
    true = d.theta(X0)[:, 0]
    err_causal = np.abs(causal.effect(X0, T0=0.0, T1=np.array([1.0, 0.0])) - true).mean()
    err_naive = np.abs(naive.effect(X0, T0=0.0, T1=np.array([1.0, 0.0])) - true).mean()
    assert err_causal < err_naive


def test_sample_weight_and_no_groups_run(data):
    w = np.random.default_rng(0).uniform(0.5, 2.0, len(data.Y))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = CausalRewardModel(cv=3, final_alpha=0.0, device="cpu").fit(data.Y, data.T, X=data.X, sample_weight=w)
    assert m.diagnostics_.n_groups == len(data.Y)
    assert np.abs(m.coef_ - data.coef).max() < 0.3


@pytest.mark.parametrize("weighted", [False, True])
def test_stats_crossfit_equals_per_fold_path(data, weighted):
    w = np.random.default_rng(3).uniform(0.5, 2.0, len(data.Y)) if weighted else None
    fast = CausalRewardModel(cv=4, final_alpha=0.0, device="cpu").fit(data.Y, data.T, X=data.X,
                                                                      groups=data.groups, sample_weight=w)
    slow = CausalRewardModel(cv=4, final_alpha=0.0, device="cpu", stats_crossfit=False).fit(
        data.Y, data.T, X=data.X, groups=data.groups, sample_weight=w)
    assert fast.crossfit_backend_ == "stats" and slow.crossfit_backend_ == "serial"
    np.testing.assert_allclose(fast.y_res_, slow.y_res_, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(fast.t_res_, slow.t_res_, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(fast.coef_, slow.coef_, rtol=1e-8)
    # CV penalties may differ where the CV error is flat to rounding; the fits above do not


def test_final_alpha_shrinks_heterogeneity_not_average_effect(data):
    m = CausalRewardModel(cv=3, final_alpha=0.0, device="cpu").fit(data.Y, data.T, X=data.X, groups=data.groups)
    ols = m.coef_.copy()
    m.refit_final(final_alpha=1e6)
    assert np.abs(m.coef_[1:]).max() < 1e-3 * np.abs(ols[1:]).max()
    assert np.abs(m.coef_[0] - data.coef[0]).max() < 0.2


@pytest.mark.parametrize("heterogeneity,expect_small", [(0.0, False), (2.0, True)])
def test_final_alpha_cv_follows_the_data(heterogeneity, expect_small):
    d = make_synthetic(n_groups=150, rows_per_group=4, d_x=6, heterogeneity=heterogeneity, noise=2.0, seed=8)
    m = CausalRewardModel(cv=3, device="cpu", final_alpha="cv").fit(d.Y, d.T, X=d.X, groups=d.groups)
    assert (m.final_alpha_ <= 0.3) == expect_small
    assert len(m.final_alpha_cv_["loss"]) == len(m.final_alpha_cv_["grid"])
    with pytest.raises(ConfigError, match="final_alpha"):
        m.refit_final(final_alpha="big")


def test_known_policy_mean_removes_latent_confounding():
    d = make_synthetic(n_groups=400, rows_per_group=5, d_x=3, d_t=2, latent=1.5, random_effect=2.0,
                       heterogeneity=0.0, seed=12)
    plain = CausalRewardModel(cv=3, device="cpu", featurizer="constant").fit(d.Y, d.T, X=d.X, groups=d.groups)
    known = CausalRewardModel(cv=3, device="cpu", featurizer="constant").fit(
        d.Y, d.T, X=d.X, groups=d.groups, t_hat=d.t_mean)
    err_plain = np.abs(plain.coef_[0] - d.coef[0]).max()
    err_known = np.abs(known.coef_[0] - d.coef[0]).max()
    assert err_known < 0.15 < err_plain
    assert known.models_t_ == [] and known.crossfit_backend_ == "serial"
    assert np.isfinite(known.score(d.Y, d.T, X=d.X, t_hat=d.t_mean))
    with pytest.raises(DataError, match="pass t_hat"):
        known.score(d.Y, d.T, X=d.X)
    with pytest.raises(DataError, match="t_hat must have the shape"):
        CausalRewardModel(cv=3).fit(d.Y, d.T, X=d.X, groups=d.groups, t_hat=d.t_mean[:, :1])


@pytest.mark.parametrize("kwargs,match", [({"cov_type": "HC9"}, "cov_type"), ({"backend": "dask"}, "backend"),
                                          ({"featurizer": "cubic"}, "featurizer kind"), ({"cv": 1}, "cv must be")])
def test_bad_settings_raise_config_errors(data, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        CausalRewardModel(device="cpu", stats_crossfit=False, **kwargs).fit(data.Y, data.T, X=data.X, groups=data.groups)


def test_default_final_alpha_is_cv_and_repr_tells_params_and_state(data):
    m = CausalRewardModel(cv=3, device="cpu")
    assert m.final_alpha == "cv"
    assert repr(m).startswith("CausalRewardModel(model_y='ridge', model_t='ridge'") and "[not fitted]" in repr(m)
    m.fit(data.Y, data.T, X=data.X, groups=data.groups)
    assert m.final_alpha_ in m.final_alpha_cv_["grid"]
    text = repr(m)
    assert "final_alpha='cv'" in text and "[fitted: n_rows=1500, n_groups=300, d_X=4" in text
    folds = [(np.arange(10), np.arange(10, 20))] * 2
    assert "cv=<2 explicit folds>" in repr(CausalRewardModel(cv=folds))


def test_head_static_effect_is_the_query_averaged_effect(fitted, data):
    head = fitted.linear_head()
    Xq, Tc = data.X[:40], data.T[:6]
    eff, se = head.static_effect(Xq, Tc)
    dense, _ = head.effect(Xq, Tc)
    assert eff.shape == se.shape == (6,)
    np.testing.assert_allclose(eff, dense.mean(0), rtol=1e-10, atol=1e-12)
    phibar = head.featurize(Xq).mean(0)
    t_base = data.T[7]
    eff_b, se_b = head.static_effect(Xq, Tc, t_base=t_base)
    np.testing.assert_allclose(eff_b, ((phibar @ head.coef) * (Tc - t_base)).sum(1), rtol=1e-10, atol=1e-12)
    v = (phibar[None, :, None] * (Tc - t_base)[:, None, :]).reshape(6, -1)
    np.testing.assert_allclose(se_b, np.sqrt(np.einsum("ij,jk,ik->i", v, head.cov, v)), rtol=1e-8)
