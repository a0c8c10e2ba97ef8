"""bench/bench_scale.py: growth slopes, the synthetic data's contract, and a tiny end-to-end run."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _mod():
    # imported by name from bench/ (not from a file spec): its sizes run in spawned processes, which
    # import the module again by name, and its dataclasses need it in sys.modules
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module("bench_scale")


def test_slopes_measure_growth_with_n() -> None:
    mod = _mod()
    runs = [{"n_rows": n, "stages": {"a": {"seconds": 2e-6 * n}, "b": {"seconds": 1e-12 * n**2}}} for n in (1e5, 1e6)]
    out = mod.slopes(runs, "seconds", ("a", "b"))
    assert out["a"] == pytest.approx(1.0, abs=1e-3) and out["b"] == pytest.approx(2.0, abs=1e-3)
    assert mod.slopes(runs[:1], "seconds", ("a",)) == {"a": None}


def test_synthetic_logs_pass_the_contract(tmp_path: Path) -> None:
    """The generated shards are valid triplets: 10 distinct prompts per query, one text per id."""
    from cpo_engine.data import read_triplets

    mod = _mod()
    spec = mod.Spec(n_rows=2000, n_prompts=50, candidates=10)
    mod.write_dataset(spec, mod.make_truth(spec), tmp_path)
    table = read_triplets(tmp_path)
    assert table.num_rows == 2000
    per_query = table.group_by("query_id").aggregate([("prompt_id", "count_distinct")])
    assert set(per_query["prompt_id_count_distinct"].to_pylist()) == {10}
    emb = mod.query_embeddings(spec, mod.make_truth(spec), 0)
    np.testing.assert_array_equal(emb, mod.query_embeddings(spec, mod.make_truth(spec), 0))  # regenerated alike


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_bench_scale_smoke(tmp_path: Path) -> None:
    mod = _mod()
    assert mod.main(["--sizes", "20000", "40000", "--candidates", "500", "--threads", "1", "--device", "cpu",
                     "--econml-sizes", "20000", "--econml-timeout", "300", "--out", str(tmp_path)]) == 0
    rec = json.loads((tmp_path / "bench_scale_cpu.json").read_text())
    assert [r["n_rows"] for r in rec["runs"]] == [20000, 40000]
    for run in rec["runs"]:
        assert set(run["stages"]) == set(mod.STAGES)
        assert all(s["seconds"] > 0 and s["peak_rss_mb"] > 0 for s in run["stages"].values())
        assert run["quality"]["score"]["recall_at_k"] == 1.0
        assert run["quality"]["fit"]["effect_corr"] > 0.9
    assert set(rec["growth_slope_time"]) == set(mod.STAGES) and all(v is not None for v in rec["growth_slope_time"].values())
    assert [r["method"] for r in rec["fit_ladder"]] == ["econml", "engine"]
    assert rec["econml_largest_finished"] == 20000 and "20000" in rec["fit_time_ratio_econml_vs_engine"]


def test_first_touch_cost_separates_fresh_from_reused_pages() -> None:
    out = _mod().first_touch_cost(mb=64)
    assert out["mb"] == 64 and out["fresh_seconds"] > 0 and out["reused_seconds"] > 0
    assert out["seconds_per_gb_fresh"] == pytest.approx((out["fresh_seconds"] - out["reused_seconds"]) * 16, abs=2e-2)
