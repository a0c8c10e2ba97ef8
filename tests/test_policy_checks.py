"""The heterogeneity test behind the policy's "outcome R^2 near zero" check holds its size and has
power at the defaults (a small run of bench/bench_policy_checks.py; the full Monte Carlo is there)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_spec = importlib.util.spec_from_file_location(
    "bench_policy_checks", Path(__file__).resolve().parents[1] / "bench" / "bench_policy_checks.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


@pytest.mark.slow
def test_heterogeneity_test_size_power_and_fallback():
    null = [bench.simulate(300, 0.0, seed)["p"] for seed in range(30)]
    assert np.mean(np.array(null) < 0.05) <= 0.2  # nominal 0.05; 30 draws: a broken test rejects far more
    strong = [bench.simulate(300, 0.3, seed) for seed in range(10)]
    assert all(s["p"] < 0.05 and not s["problems"] for s in strong)
    few = bench.simulate(40, 0.3, 0)
    assert any("training queries" in p for p in few["problems"])
