"""Monte Carlo checks that fail when the statistics break: interval coverage at the model's defaults
(a per-row meat, or a standard error scaled by 0.7 or 10, fails them), the known-policy path, and the
search's false departures under a global null. Smaller versions of bench/bench_calibration.py."""

from __future__ import annotations

import pytest

from cpo_engine.causal.calibration import CoverageDesign, coverage_study
from cpo_engine.search.calibration import NullDesign, null_study
from cpo_engine.search.config import SelectionConfig


@pytest.mark.slow
def test_default_intervals_cover_with_clustered_queries():
    """Default penalty (final_alpha='cv'), clustered queries with their own random slopes: 95% intervals of
    theta(X) cover at 95% and standardized errors have unit variance. Bounds are ~4 Monte Carlo errors."""
    res = coverage_study(60, CoverageDesign(n_groups=200), seed=100)
    assert res["share_penalized"] > 0.5  # the default penalty was active in most fits
    assert 0.915 <= res["coverage"] <= 0.98, res
    assert 0.75 <= res["mean_z2"] <= 1.3, res


@pytest.mark.slow
def test_known_policy_intervals_cover_under_latent_confounding():
    design = CoverageDesign(n_groups=200, latent=1.5, random_effect=2.0, known_policy=True)
    known = coverage_study(30, design, seed=200)
    assert known["coverage"] >= 0.9 and known["average_effect_covered"] >= 0.85, known
    plain = coverage_study(5, CoverageDesign(n_groups=200, latent=1.5, random_effect=2.0), seed=200)
    assert plain["coverage"] < 0.5  # without the policy the same data give badly biased intervals


@pytest.mark.slow
def test_search_does_not_leave_the_incumbent_under_a_global_null():
    rules = {"default": SelectionConfig(), "pointwise": SelectionConfig(simultaneous=False, split=False)}
    res = null_study(5, NullDesign(n_queries=200, d_x=8, n_candidates=1000), seed=300, rules=rules)["rules"]
    assert res["default"]["false_departures"] <= 0.05 and res["default"]["pool_false_departures"] <= 0.05
    # the reported uplift of the search's pick is estimated out of sample: no winner's curse
    d = res["default"]
    assert abs(d["pick_reported_uplift_z"]) <= 3 * d["pick_reported_uplift_z_mc_se"] + 0.1, d
    # the check has teeth: the pointwise rule on one fit leaves it on many queries, with inflated uplifts
    assert res["pointwise"]["false_departures"] > 0.2
    assert res["pointwise"]["pick_reported_uplift_z"] > 1.0
