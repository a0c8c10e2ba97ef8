"""Cross-fitting folds as Ray tasks give exactly the serial result (same `_fit_fold`)."""

from __future__ import annotations

import numpy as np
import pytest

from cpo_engine.causal import CausalRewardModel
from cpo_engine.causal.synthetic import make_synthetic

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=4, include_dashboard=False, object_store_memory=512 * 1024**2,
             log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


@pytest.mark.ray
@pytest.mark.timeout(180)
@pytest.mark.parametrize("nuisance", ["ridge", "mlp"])
def test_ray_folds_identical_to_serial(ray_local, nuisance):
    d = make_synthetic(n_groups=100, rows_per_group=4, seed=11)
    kw = dict(model_y=nuisance, model_t=nuisance, cv=4, device="cpu", random_state=2,
              ray_options={"num_cpus": 2})  # <= 2 workers: fewer imports
    serial = CausalRewardModel(backend="serial", stats_crossfit=False, **kw).fit(d.Y, d.T, X=d.X, groups=d.groups)
    remote = CausalRewardModel(backend="ray", **kw).fit(d.Y, d.T, X=d.X, groups=d.groups)
    np.testing.assert_array_equal(serial.y_res_, remote.y_res_)
    np.testing.assert_array_equal(serial.t_res_, remote.t_res_)
    np.testing.assert_array_equal(serial.coef_, remote.coef_)
    np.testing.assert_array_equal(serial.cov_, remote.cov_)
