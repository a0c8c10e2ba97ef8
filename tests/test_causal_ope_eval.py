"""The OPE check and the data-budget sweep of `cpo evaluate`, and observational logs drawn from a grid,
on the seeded toy grid of test_causal_eval (real Representations built from seeded vectors)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cpo_engine.causal import CausalConfig, EvaluationConfig, evaluate, write_evaluation
from cpo_engine.causal.budget import SweepConfig, run_sweep, sweep_points, write_budget
from cpo_engine.causal.evaluation import observational_logs
from cpo_engine.causal.ope_validation import error_stats
from cpo_engine.embedding import Representations, TorchPCA
from cpo_engine.exceptions import ConfigError
from tests.test_causal_eval import _grid_table


def test_ope_check_reports_bias_rmse_and_coverage(tmp_path):
    table, reps, _ = _grid_table(n_q=100, seed=2)
    cfg = EvaluationConfig(confounding="observable", strength=1.0, exploration=0.3, seeds=2, ope_draws=3)
    result = evaluate(table, cfg, causal=CausalConfig(cv=3), representations=reps)
    ope = result["ope"]
    assert ope["n_seeds"] == 2 and ope["n_draws"] == 6
    for source in ("known", "estimated"):
        for est in ("dm", "ipw", "snips", "dr", "sndr"):
            s = ope["pooled"][source][est]
            assert s["n"] == 6 * len(ope["by_method"][source][est]) and 0 <= s["coverage"] <= 1
            assert s["rmse"] >= abs(s["bias"]) and s["mean_width"] > 0
    assert set(ope["by_reward_model"]) == {"causal", "non_causal", "static"}
    assert ope["logging_policy"]["n"] == 6
    assert set(ope["by_method"]["known"]["dr"]) == set(result["methods"])  # every method's policy is valued
    assert "draws" not in result["per_seed"][0]["ope"]  # raw draws stay in the checkpoints
    paths = write_evaluation(result, tmp_path)
    text = paths["table"].read_text()
    assert "Off-policy evaluation vs truth" in text and "| known | dr |" in text
    assert json.loads(paths["json"].read_text())["ope"]["pooled"]["known"]["dr"]["n"] > 0


def test_error_stats_counts_coverage():
    s = error_stats(np.array([1.0, 2.0, 3.0]), np.array([0.5, 2.5, 2.0]), np.array([1.5, 3.0, 4.0]),
                    np.array([1.0, 2.0, 3.0]))
    assert s["coverage"] == pytest.approx(2 / 3) and s["bias"] == 0 and s["mean_width"] == pytest.approx(7 / 6)
    assert s["coverage_ci_low"] < 2 / 3 < s["coverage_ci_high"]


def test_observational_logs_one_prompt_per_query_with_propensities():
    table, _, _ = _grid_table(n_q=60, seed=1)
    cfg = EvaluationConfig(confounding="observable", strength=2.0, exploration=0.1)
    logs = observational_logs(table, cfg, per_query=1, seed=0)
    assert logs.num_rows == 60 and len(set(logs.column("query_id").to_pylist())) == 60
    p = np.asarray(logs.column("propensity").to_numpy())
    assert (p >= 0.1 / 6 - 1e-12).all() and (p <= 1).all()
    # each logged score is one of its cell's recorded samples
    cells = {}
    for r in table.to_pylist():
        cells.setdefault((r["query_id"], r["prompt_id"]), []).append(r["score"])
    assert all(r["score"] in cells[(r["query_id"], r["prompt_id"])] for r in logs.to_pylist())
    assert "propensity" not in observational_logs(table, cfg, with_propensity=False).column_names


def _represent(n_q=120, seed=5):
    table, reps, _ = _grid_table(n_q=n_q, seed=seed)
    cache = {}

    def represent(qc, pc):
        if (qc, pc) not in cache:
            qpca = TorchPCA(qc, device="cpu").fit(reps.query_embeddings)
            ppca = TorchPCA(min(pc, len(reps.prompt_ids) - 1), device="cpu").fit(reps.prompt_embeddings)
            cache[(qc, pc)] = Representations(reps.query_ids, reps.prompt_ids, reps.query_texts, reps.prompt_texts,
                                              qpca.transform(reps.query_embeddings),
                                              ppca.transform(reps.prompt_embeddings), reps.row_query,
                                              reps.row_prompt, qpca, ppca, reps.query_embeddings,
                                              reps.prompt_embeddings, reps.provenance)
        return cache[(qc, pc)]

    return table, represent


def test_budget_sweep_points_share_the_base_and_resume(tmp_path):
    sweep = SweepConfig(axes=["train_queries", "logged_per_query", "query_components"], train_queries=[30],
                        logged_per_query=[1], query_components=[2], seeds=1, ope_draws=1)
    base = EvaluationConfig(confounding="observable", strength=-1.0, exploration=0.2)
    points = sweep_points(sweep, base, query_components=6, prompt_components=3)
    keys = [p.key for p in points]
    assert len(keys) == 2 + 2 + 2 and len(set(keys)) == 4  # the base point appears on every axis
    table, represent = _represent()
    result = run_sweep(table, sweep, base, represent, query_components=6, prompt_components=3,
                       causal=CausalConfig(cv=3), checkpoint_dir=tmp_path / "points")
    rows = result["curves"]["train_queries"]
    assert [r["value"] for r in rows] == [30, None]
    assert rows[0]["n_train_queries"] == 30 and rows[0]["logged_rows"] < rows[-1]["logged_rows"]
    assert [r["query_components"] for r in result["curves"]["query_components"]] == [2, 6]
    assert {"causal", "non_causal", "static"} <= set(rows[0]["ope"])
    assert len(list((tmp_path / "points").iterdir())) == 4
    paths = write_budget(result, tmp_path)
    assert paths["plot_train_queries"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "training triplets" in paths["table"].read_text()
    with pytest.raises(ConfigError, match="unknown axis"):
        SweepConfig(axes=["depth"])
