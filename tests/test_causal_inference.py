"""The final stage's statistics: covariances equal statsmodels', the per-query statistics path equals the
row path, intervals come from the unpenalized fit, the split halves are disjoint fits."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from cpo_engine.causal import CausalRewardModel
from cpo_engine.causal._final_stats import group_moments
from cpo_engine.causal.inference import ClusterPhi, fit_final, fit_final_stage, split_halves
from cpo_engine.causal.synthetic import make_synthetic

sm = pytest.importorskip("statsmodels.api")


def _residual_problem(seed: int = 0, n_groups: int = 120, shuffle: bool = True, slope: float = 0.6):
    """Residual-like final-stage inputs with query-level phi, unequal query sizes, within-query
    correlation through a per-query random slope, rows in random order."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 9, n_groups)
    g = np.repeat(np.arange(n_groups), sizes)
    Xq = rng.normal(size=(n_groups, 3))
    phi = np.hstack([np.ones((len(g), 1)), Xq[g]])
    t = rng.normal(size=(len(g), 2))
    eta = rng.normal(0, slope, size=(n_groups, 2))
    y = (phi @ rng.normal(size=(4, 2)) * t).sum(1) + (eta[g] * t).sum(1) + rng.normal(size=len(g))
    w = rng.uniform(0.5, 2.0, len(g))
    order = rng.permutation(len(g)) if shuffle else np.arange(len(g))
    return phi[order], t[order], y[order], w[order], (g[order] * 7 + 3)  # non-dense, unsorted ids


def _design(phi, t):
    return (phi[:, :, None] * t[:, None, :]).reshape(len(phi), -1)


@pytest.mark.parametrize("path", ["clusters", "rows"])
@pytest.mark.parametrize("weighted", [False, True])
def test_cluster_covariance_equals_statsmodels(path, weighted):
    phi, t, y, w, g = _residual_problem()
    w = w if weighted else None
    fit = fit_final(phi, t, y, groups=g, sample_weight=w, cov_type="cluster", path=path)
    F = _design(phi, t)
    ref = (sm.WLS(y, F, weights=w) if weighted else sm.OLS(y, F)).fit(cov_type="cluster", cov_kwds={"groups": g})
    np.testing.assert_allclose(fit.coef.reshape(-1), ref.params, rtol=1e-10)
    np.testing.assert_allclose(fit.cov, ref.cov_params(), rtol=1e-9, atol=1e-14)
    assert fit.n_clusters == len(np.unique(g))


@pytest.mark.parametrize("cov_type,sm_type", [("HC1", "HC1"), ("HC0", "HC0"), ("nonrobust", "nonrobust")])
def test_row_covariances_equal_statsmodels(cov_type, sm_type):
    phi, t, y, w, g = _residual_problem(seed=1)
    fit = fit_final(phi, t, y, groups=g, sample_weight=w, cov_type=cov_type)
    ref = sm.WLS(y, _design(phi, t), weights=w).fit(cov_type=sm_type)
    np.testing.assert_allclose(fit.cov, ref.cov_params(), rtol=1e-9, atol=1e-14)


def test_clustering_matters_when_a_query_shares_errors_through_t():
    phi, t, y, w, g = _residual_problem(seed=2, n_groups=300, slope=1.0)
    se_cluster = np.sqrt(np.diag(fit_final(phi, t, y, groups=g, cov_type="cluster").cov))
    se_hc1 = np.sqrt(np.diag(fit_final(phi, t, y, groups=g, cov_type="HC1").cov))
    assert np.median(se_cluster / se_hc1) > 1.3  # a per-row meat would be far too narrow here


@pytest.mark.parametrize("alpha", [0.0, 0.3, "cv"])
def test_cluster_statistics_path_equals_row_path(alpha):
    phi, t, y, w, g = _residual_problem(seed=3)
    ids = np.unique(g)
    fold_of = np.random.default_rng(0).permutation(len(ids)) % 3
    f = fold_of[np.searchsorted(ids, g)]
    folds = [(np.flatnonzero(f != k), np.flatnonzero(f == k)) for k in range(3)]
    a = fit_final_stage(phi, t, y, folds=folds, groups=g, sample_weight=w, alpha=alpha, path="clusters", split_seed=4)
    b = fit_final_stage(phi, t, y, folds=folds, groups=g, sample_weight=w, alpha=alpha, path="rows", split_seed=4)
    assert (a.path, b.path) == ("clusters", "rows") and a.alpha == b.alpha
    np.testing.assert_allclose(a.coef, b.coef, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(a.inference.cov, b.inference.cov, rtol=1e-8, atol=1e-15)
    if alpha == "cv":
        np.testing.assert_allclose(a.alpha_cv["loss"], b.alpha_cv["loss"], rtol=1e-9)
    for ha, hb in zip(a.halves, b.halves):
        np.testing.assert_allclose(ha.coef, hb.coef, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(ha.cov, hb.cov, rtol=1e-8, atol=1e-15)


def test_group_moments_on_unsorted_unequal_groups():
    rng = np.random.default_rng(5)
    codes = rng.permutation(np.repeat(np.arange(40), rng.integers(1, 20, 40)))
    Z, w = rng.normal(size=(len(codes), 4)), rng.uniform(0, 2, len(codes))
    M = group_moments(Z, w, codes, 40)
    ref = np.stack([(Z[codes == k] * w[codes == k, None]).T @ Z[codes == k] for k in range(40)])
    np.testing.assert_allclose(M, ref, rtol=1e-12, atol=1e-12)
    eq = np.repeat(np.arange(10), 3)  # sorted, equal sizes: the no-copy path
    np.testing.assert_allclose(group_moments(Z[:30], w[:30], eq, 10),
                               np.stack([(Z[3 * k:3 * k + 3] * w[3 * k:3 * k + 3, None]).T @ Z[3 * k:3 * k + 3]
                                         for k in range(10)]), rtol=1e-12)


@pytest.mark.parametrize("alpha", [0.0, "cv"])
def test_model_fast_path_equals_the_row_path(alpha):
    d = make_synthetic(n_groups=150, rows_per_group=5, seed=6)
    order = np.random.default_rng(1).permutation(len(d.Y))
    Y, T, X, g = d.Y[order] + 40.0, d.T[order], d.X[order], d.groups[order]  # an offset tests the centering
    w = np.random.default_rng(2).uniform(0.5, 2.0, len(Y))
    m = CausalRewardModel(cv=3, final_alpha=alpha, device="cpu").fit(Y, T, X=X, groups=g, sample_weight=w)
    assert m.final_path_ == "clusters" and m._final_moments is not None and m.crossfit_backend_ == "stats"
    ref = fit_final_stage(m.featurizer_.transform(X), m.t_res_, m.y_res_, folds=m.folds_, groups=m._groups,
                          sample_weight=w, alpha=alpha, path="rows", split_seed=0)
    np.testing.assert_allclose(m.coef_, ref.coef, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(m.cov_, ref.inference.cov, rtol=1e-7, atol=1e-14)
    np.testing.assert_allclose(m.split_["estimate"][1], ref.halves[1].cov, rtol=1e-7, atol=1e-14)
    slow = CausalRewardModel(cv=3, final_alpha=alpha, device="cpu", stats_crossfit=False).fit(
        Y, T, X=X, groups=g, sample_weight=w)
    np.testing.assert_allclose(m.cov_, slow.cov_, rtol=1e-7, atol=1e-14)


def test_cluster_phi_rows_and_values_agree():
    phi, t, y, w, g = _residual_problem(seed=7, shuffle=False)
    codes = np.unique(g, return_inverse=True)[1]
    first = np.unique(codes, return_index=True)[1]
    a = fit_final(ClusterPhi(phi[first]), t, y, groups=g, sample_weight=w)
    b = fit_final(phi, t, y, groups=g, sample_weight=w, path="rows")
    np.testing.assert_allclose(a.cov, b.cov, rtol=1e-9, atol=1e-15)


def test_intervals_come_from_the_unpenalized_fit():
    d = make_synthetic(n_groups=200, rows_per_group=5, heterogeneity=1.0, seed=9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pen = CausalRewardModel(cv=3, final_alpha=3.0, device="cpu").fit(d.Y, d.T, X=d.X, groups=d.groups)
        ols = CausalRewardModel(cv=3, final_alpha=0.0, device="cpu").fit(d.Y, d.T, X=d.X, groups=d.groups)
    assert np.abs(pen.coef_[1:]).max() < 0.8 * np.abs(ols.coef_[1:]).max()  # the point estimate is shrunk
    np.testing.assert_allclose(pen.inference_coef_, ols.coef_, rtol=1e-10)
    np.testing.assert_allclose(pen.cov_, ols.cov_, rtol=1e-10)
    X = d.X[:10]
    for a, b in zip(pen.const_marginal_effect_interval(X), ols.const_marginal_effect_interval(X)):
        np.testing.assert_allclose(a, b, rtol=1e-10)
    head = pen.linear_head()
    np.testing.assert_allclose(head.coef, ols.coef_, rtol=1e-10)
    np.testing.assert_allclose(head.point_coef, pen.coef_)


def test_t_intervals_are_wider_by_the_t_quantile():
    d = make_synthetic(n_groups=12, rows_per_group=20, seed=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = CausalRewardModel(cv=3, final_alpha=0.0, device="cpu").fit(d.Y, d.T, X=d.X, groups=d.groups)
    lo, hi = m.effect_interval(d.X[:5], T0=0.0, T1=np.ones(3))
    m.interval = "t"
    lo_t, hi_t = m.effect_interval(d.X[:5], T0=0.0, T1=np.ones(3))
    from scipy.stats import norm, t

    np.testing.assert_allclose((hi_t - lo_t) / (hi - lo), t.ppf(0.975, 11) / norm.ppf(0.975), rtol=1e-10)


def test_split_halves_are_disjoint_fits_on_half_the_queries():
    d = make_synthetic(n_groups=200, rows_per_group=5, seed=11)
    m = CausalRewardModel(cv=3, final_alpha=0.0, device="cpu").fit(d.Y, d.T, X=d.X, groups=d.groups)
    half = split_halves(200, 0)
    assert abs(int(half.sum()) - 100) <= 1
    rows = half[m._groups] == 1  # the estimation half refits on exactly its queries' rows
    ref = fit_final(m.featurizer_.transform(d.X)[rows], m.t_res_[rows], m.y_res_[rows], groups=m._groups[rows])
    np.testing.assert_allclose(m.split_["estimate"][0], ref.coef, rtol=1e-9)
    np.testing.assert_allclose(m.split_["estimate"][1], ref.cov, rtol=1e-8)
    # each half has about twice the variance of the full fit
    ratio = np.diag(m.split_["select"][1]) / np.diag(m.cov_)
    assert 1.4 < np.median(ratio) < 2.8
