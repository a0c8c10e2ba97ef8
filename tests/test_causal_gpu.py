"""The CUDA path is the CPU code on another device: results must agree (skipped without CUDA)."""

from __future__ import annotations

import numpy as np
import pytest

from cpo_engine.causal import CausalRewardModel, TorchRidge
from cpo_engine.causal.synthetic import make_synthetic

pytestmark = pytest.mark.gpu


def test_torch_ridge_cuda_matches_cpu():
    d = make_synthetic(n_groups=200, rows_per_group=5, seed=2)
    cpu = TorchRidge(device="cpu").fit(d.X, d.T, groups=d.groups)
    gpu = TorchRidge(device="cuda").fit(d.X, d.T, groups=d.groups)
    np.testing.assert_allclose(gpu.coef_, cpu.coef_, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("stats", [True, False])
def test_causal_model_cuda_matches_cpu(stats):
    d = make_synthetic(n_groups=300, rows_per_group=5, seed=3)
    kw = dict(cv=4, final_alpha="cv", stats_crossfit=stats)
    cpu = CausalRewardModel(device="cpu", **kw).fit(d.Y, d.T, X=d.X, groups=d.groups)
    gpu = CausalRewardModel(device="cuda", **kw).fit(d.Y, d.T, X=d.X, groups=d.groups)
    np.testing.assert_allclose(gpu.coef_, cpu.coef_, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(gpu.cov_, cpu.cov_, rtol=1e-6, atol=1e-12)


def test_cuml_ridge_twin_matches_torch_ridge():
    pytest.importorskip("cuml")
    from cpo_engine.causal.nuisances.cuml import make_cuml_ridge

    d = make_synthetic(n_groups=200, rows_per_group=5, seed=4)
    ref = TorchRidge(alpha=1.0, device="cpu").fit(d.X, d.Y)
    twin = make_cuml_ridge(alpha=1.0).fit(d.X.astype(np.float64), d.Y)
    np.testing.assert_allclose(np.asarray(twin.predict(d.X)), ref.predict(d.X), rtol=1e-5, atol=1e-6)
