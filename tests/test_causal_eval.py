"""Evaluation harness: metrics, logging policies, grid checks, and an end-to-end run that writes
evaluation.json / .md / .png. Representations are real `Representations` objects built with
TorchPCA on seeded vectors (embedding real texts with MiniLM is exercised by `cpo evaluate`)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from scipy.stats import kendalltau

from cpo_engine.causal import CausalConfig, EvaluationConfig, evaluate, write_evaluation
from cpo_engine.causal.evaluation import build_grid, draw_logs, logging_policy, policy_metrics, static_ipw, tau_b_rows
from cpo_engine.data.grid import split_queries
from cpo_engine.embedding import Representations, TorchPCA
from cpo_engine.exceptions import ConfigError, DataError


def _grid_table(n_q=80, n_p=6, samples=3, seed=0):
    """A full grid whose success rates depend on a query feature and prompt length."""
    rng = np.random.default_rng(seed)
    q_emb = rng.normal(size=(n_q, 12))
    p_emb = rng.normal(size=(n_p, 12))
    diff = q_emb[:, 0]
    qtexts = [f"Q{q}: " + "x " * int(5 + 10 * (d > 0)) + " ".join(str(i) for i in range(q % 4))
              for q, d in enumerate(diff)]
    ptexts = ["Answer:" + " think" * (3 * p) for p in range(n_p)]
    p_len = np.arange(n_p) / n_p
    logit = -diff[:, None] + 0.8 * p_len[None, :] * np.sign(q_emb[:, 1])[:, None] + 0.3 * p_len[None, :]
    prob = 1 / (1 + np.exp(-logit))
    rows = {"query_id": [], "query_text": [], "prompt_id": [], "prompt_text": [], "score": [], "task": []}
    for q in range(n_q):
        for p in range(n_p):
            for _ in range(samples):
                rows["query_id"].append(f"q{q}"); rows["query_text"].append(qtexts[q])
                rows["prompt_id"].append(f"p{p}"); rows["prompt_text"].append(ptexts[p])
                rows["score"].append(float(rng.random() < prob[q, p])); rows["task"].append("toy")
    table = pa.table(rows)
    reps = _reps(table, q_emb, p_emb, qtexts, ptexts, n_q, n_p)
    return table, reps, prob


def _reps(table, q_emb, p_emb, qtexts, ptexts, n_q, n_p):
    qpca, ppca = TorchPCA(6, device="cpu").fit(q_emb), TorchPCA(3, device="cpu").fit(p_emb)
    row_q = np.array([int(s[1:]) for s in table.column("query_id").to_pylist()])
    row_p = np.array([int(s[1:]) for s in table.column("prompt_id").to_pylist()])
    return Representations(np.array([f"q{i}" for i in range(n_q)], dtype=object),
                           np.array([f"p{i}" for i in range(n_p)], dtype=object), qtexts, ptexts,
                           qpca.transform(q_emb), ppca.transform(p_emb), row_q, row_p, qpca, ppca,
                           q_emb, p_emb, {"encoder": "seeded-vectors"})


def test_tau_b_rows_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 4, size=(30, 7)).astype(float)
    truth = rng.integers(0, 3, size=(30, 7)).astype(float)
    ours = tau_b_rows(pred, truth)
    ref = np.array([kendalltau(a, b).statistic for a, b in zip(pred, truth)])
    np.testing.assert_allclose(ours, ref, equal_nan=True)
    assert np.isnan(tau_b_rows(np.ones((1, 4)), np.arange(4.0)[None]))[0]


def test_policy_metrics_oracle_has_zero_regret():
    truth = np.array([[0.1, 0.9, 0.5], [0.8, 0.2, 0.3]])
    m = policy_metrics(truth, truth, np.array([True, False]))
    assert m["regret"] == 0 and m["policy_value"] == pytest.approx(0.85) and m["tau_b"] == 1.0
    static = policy_metrics(np.broadcast_to(np.array([0, 1, 0.0]), truth.shape), truth, np.array([True, False]))
    assert static["policy_value"] == pytest.approx(0.55) and static["regret_hard"] == 0


@pytest.mark.parametrize("kind", ["none", "observable", "latent"])
def test_logging_policy_and_logs(kind):
    table, reps, _ = _grid_table()
    grid = build_grid(table, reps)
    policy = logging_policy(grid, EvaluationConfig(confounding=kind, strength=3.0))
    np.testing.assert_allclose(policy.sum(1), 1.0)
    if kind == "none":
        np.testing.assert_allclose(policy, 1 / 6)
    if kind == "latent":  # hard queries favour the longest prompt
        hard = grid.truth.mean(1) < np.median(grid.truth.mean(1))
        assert policy[hard, -1].mean() > policy[~hard, -1].mean()
    rng = np.random.default_rng(0)
    logs = draw_logs(grid, policy, np.arange(80), 400, rng)
    freq = np.bincount(logs["p"][logs["q"] == 0], minlength=6) / 400
    assert np.abs(freq - policy[0]).max() < 0.08
    assert set(np.unique(logs["y"])) <= {0.0, 1.0}


def test_default_logging_policy_keeps_the_exploration_floor_ope_needs():
    table, reps, _ = _grid_table()
    grid = build_grid(table, reps)
    cfg = EvaluationConfig(confounding="observable", strength=8.0)  # steep router, default exploration
    policy = logging_policy(grid, cfg)
    assert cfg.exploration == 0.2
    assert policy.min() >= 0.2 / 6 - 1e-12  # every prompt keeps propensity >= exploration / n_prompts
    greedy = logging_policy(grid, EvaluationConfig(confounding="observable", strength=8.0, exploration=0.0))
    assert greedy.min() < 1e-3  # without the floor the same router leaves prompts unlogged


def test_split_keeps_identical_texts_together():
    table, reps, _ = _grid_table()
    reps.query_texts[1] = reps.query_texts[0]
    grid = build_grid(table, reps)
    for seed in range(5):
        train, test = split_queries(grid.query_texts, 0.3, np.random.default_rng(seed))
        assert (0 in train) == (1 in train)
        assert len(np.intersect1d(train, test)) == 0


def test_ipw_static_is_unbiased_where_naive_is_not():
    table, reps, _ = _grid_table(n_q=200, seed=1)
    grid = build_grid(table, reps)
    policy = logging_policy(grid, EvaluationConfig(confounding="latent", strength=3.0))
    logs = draw_logs(grid, policy, np.arange(200), 30, np.random.default_rng(1))
    true = grid.truth.mean(0)
    naive = np.bincount(logs["p"], weights=logs["y"], minlength=6) / np.bincount(logs["p"], minlength=6)
    assert np.abs(static_ipw(logs, 6) - true).mean() < np.abs(naive - true).mean()


def test_missing_cell_is_reported():
    table, reps, _ = _grid_table(n_q=20)
    keep = np.ones(table.num_rows, dtype=bool)
    keep[:3] = False  # all samples of (q0, p0)
    small = table.filter(pa.array(keep))
    reps.row_query, reps.row_prompt = reps.row_query[keep], reps.row_prompt[keep]
    with pytest.raises(DataError, match="not a full grid.*'q0' x prompt 'p0'"):
        build_grid(small, reps)


def test_config_validation():
    with pytest.raises(ConfigError, match="confounding"):
        EvaluationConfig(confounding="strong").validate()
    with pytest.raises(ConfigError):
        EvaluationConfig(test_fraction=1.5).validate()


def test_evaluate_end_to_end_writes_outputs(tmp_path):
    table, reps, _ = _grid_table(n_q=150, seed=2)
    cfg = EvaluationConfig(confounding="observable", strength=2.0, logged_per_query=4, seeds=2)
    result = evaluate(table, cfg, causal=CausalConfig(cv=3), representations=reps)
    paths = write_evaluation(result, tmp_path)
    data = json.loads(paths["json"].read_text())
    assert data["settings"]["confounding"] == "observable" and data["settings"]["seeds"] == 2
    from scipy.stats import t as student_t

    for name in ("causal_dml", "causal_dml_known_policy", "outcome_model", "static_naive", "static_ipw",
                 "oracle_static", "oracle_per_query"):
        for metric in ("policy_value", "tau_b"):
            ci = data["methods"][name][metric]
            v = np.array([s["methods"][name][metric] for s in data["per_seed"]], dtype=float)
            half = student_t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))  # t interval over seeds
            assert ci["mean"] == pytest.approx(v.mean(), rel=1e-12, abs=1e-12)
            assert ci["ci_high"] - ci["mean"] == pytest.approx(half, rel=1e-9, abs=1e-12)
            assert ci["mean"] - ci["ci_low"] == pytest.approx(half, rel=1e-9, abs=1e-12)
    m = data["methods"]
    assert m["oracle_per_query"]["regret"]["mean"] == 0
    assert "| method |" in paths["table"].read_text()
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data["per_seed"]) == 2 and "overlap" in data["per_seed"][0]["causal_diagnostics"]


def test_evaluation_resumes_from_checkpoints(tmp_path):
    table, reps, _ = _grid_table(n_q=100, seed=3)
    cfg, causal = EvaluationConfig(confounding="latent", strength=-2.0, seeds=2), CausalConfig(cv=3)
    first = evaluate(table, cfg, causal=causal, representations=reps, checkpoint_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed_0.json", "seed_1.json"]
    saved = json.loads((tmp_path / "seed_1.json").read_text())
    saved["result"]["methods"]["causal_dml"]["policy_value"] = -1.0  # proves the file is reused
    (tmp_path / "seed_1.json").write_text(json.dumps(saved))
    again = evaluate(table, cfg, causal=causal, representations=reps, checkpoint_dir=tmp_path)
    assert again["per_seed"][1]["methods"]["causal_dml"]["policy_value"] == -1.0
    assert again["per_seed"][0]["methods"] == first["per_seed"][0]["methods"]
    other = evaluate(table, EvaluationConfig(confounding="none", seeds=2), causal=causal, representations=reps,
                     checkpoint_dir=tmp_path)
    assert other["per_seed"][1]["methods"]["causal_dml"]["policy_value"] != -1.0
