"""The `cpo run` workflow's steps end to end on seeded synthetic data with a known per-query optimum."""

from __future__ import annotations

import html
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cpo_engine.causal import CausalConfig
from cpo_engine.data.grid import cell_means, split_queries
from cpo_engine.exceptions import ConfigError
from cpo_engine.search import BeamConfig, ProposerConfig
from cpo_engine.workflows.config import HoldoutConfig, RunConfig
from cpo_engine.workflows.run import choose_pool, fit_models, generative_search, training_logs
from cpo_engine.workflows.run_outputs import write_run_outputs
from tests.search_helpers import SEEDS, hash_embed


def test_split_keeps_identical_texts_together() -> None:
    texts = ["a", "b", "a", "c", "d", "b", "e", "f", "g", "h"]
    train, test = split_queries(texts, 0.3, 0)
    assert sorted(np.concatenate([train, test])) == list(range(10))
    for t in ("a", "b"):
        sides = {i in set(test) for i, x in enumerate(texts) if x == t}
        assert len(sides) == 1
    with pytest.raises(ConfigError):
        HoldoutConfig(test_fraction=1.0)


def test_cell_means_with_missing_cells() -> None:
    Y, n = cell_means(np.array([0, 0, 1]), np.array([1, 1, 0]), np.array([1.0, 0.0, 1.0]), 2, 2)
    np.testing.assert_allclose(Y, [[np.nan, 0.5], [1.0, np.nan]])
    np.testing.assert_array_equal(n, [[0, 2], [1, 0]])


def _synthetic(n_q: int = 400, seed: int = 0) -> tuple[SimpleNamespace, np.ndarray, pa.Table]:
    """Full grid; the best prompt depends on the sign of the query feature x0 (known truth)."""
    rng = np.random.default_rng(seed)
    texts = list(SEEDS) + ["Answer with one number only."]
    T = hash_embed(texts)
    T_c = T - T.mean(0)
    X = rng.normal(size=(n_q, 2))
    w = np.array([1.0, -0.5, 0.3, 0.2])  # effect direction in T space, scaled by x0
    p = 0.5 + 0.35 * np.tanh(np.outer(X[:, 0], T_c @ w) * 3)
    rq, rp = np.repeat(np.arange(n_q), 5 * 3), np.tile(np.repeat(np.arange(5), 3), n_q)
    y = (rng.random(len(rq)) < p[rq, rp]).astype(float)
    qids = np.array([f"q{i}" for i in range(n_q)], dtype=object)
    reps = SimpleNamespace(query_ids=qids, prompt_ids=np.array([f"p{j}" for j in range(5)], dtype=object),
                           query_texts=[f"question number {i}" for i in range(n_q)], prompt_texts=texts,
                           X=X, T=T, row_query=rq, row_prompt=rp, provenance={})
    table = pa.table({"query_id": qids[rq].astype(str), "prompt_id": reps.prompt_ids[rp].astype(str), "score": y,
                      "task": ["synthetic"] * len(y)})
    return reps, y, table


def _write_run(out, reps, table, cfg):  # noqa: ANN001, ANN202
    """A real run folder from the run's own steps on (synthetic) representations, without the encoder: the
    report tests' fixture. Returns the written paths and the pool."""
    from cpo_engine.data.grid import split_queries
    from cpo_engine.workflows.run import choose_pool, fit_models, generative_search, training_logs
    from cpo_engine.workflows.run_outputs import write_run_outputs
    from tests.search_helpers import hash_embed

    train, test = split_queries(reps.query_texts, cfg.holdout.test_fraction, 0)
    logs = training_logs(table, reps, train, cfg.holdout, seed=0)
    causal, outcome = fit_models(reps, logs, cfg)
    pool = choose_pool(reps, table, logs, test, causal, outcome, cfg)
    result = generative_search(table, reps, pool.head, cfg, hash_embed)
    _, paths = write_run_outputs(out, reps, cfg, causal, pool, result, train, test, {"fit": 1.0})
    return paths, pool


def _cfg(**beam) -> RunConfig:
    return RunConfig(causal=CausalConfig(cv=3), beam=BeamConfig(**({"rounds": 1, "beam_width": 2, "query_beams": 1,
                                                                     "children_per_beam": 4} | beam)),
                     proposer=ProposerConfig(edit_prior=None), device="cpu")


def test_pool_mode_beats_static_and_outputs_are_written(tmp_path: Path) -> None:
    reps, y, table = _synthetic()
    cfg = _cfg()
    train, test = split_queries(reps.query_texts, cfg.holdout.test_fraction, 0)
    logs = training_logs(table, reps, train, cfg.holdout, seed=0)
    assert set(np.unique(logs.q)) == set(train)
    causal, outcome = fit_models(reps, logs, cfg)
    # the run's model names its prompts as the data do (not p0, p1, ... by position) in its per-prompt effects
    named = SimpleNamespace(**(vars(reps) | {"prompt_ids": np.array([f"instr-{j}" for j in range(5)], dtype=object)}))
    assert fit_models(named, logs, cfg)[0].prompt_effects().column("prompt_id").to_pylist() == list(named.prompt_ids)
    pool = choose_pool(reps, table, logs, test, causal, outcome, cfg)
    for key in ("causal_point", "causal_lcb"):  # heterogeneous truth: the per-query choice must win
        ev = pool.evaluations[key]
        assert ev["vs_static"]["ci_low"] > 0, (key, ev)
        assert ev["policy_value"] <= ev["oracle_value"] + 1e-12
    assert pool.static_rank_agreement > 0.5
    result = generative_search(table, reps, pool.head, cfg, hash_embed)
    assert len(result.candidates) > 4
    evaluation, paths = write_run_outputs(tmp_path, reps, cfg, causal, pool, result, train, test, {"fit": 1.0})
    assign = pq.read_table(paths["assignment"])
    # one answer per query: a single recommendation with its evidence, no second (searched) answer beside it
    assert assign.num_rows == len(reps.query_ids) and not any(c.startswith("search_") for c in assign.column_names)
    assert {"recommended_prompt_id", "recommended_prompt_text", "source", "verified", "effect", "effect_ci_low",
            "effect_ci_high", "departs_from_static", "reason", "split"} <= set(assign.column_names)
    assert set(assign.column("source").to_pylist()) == {"logged"} and all(assign.column("verified").to_pylist())
    rec = assign.to_pandas()
    # the heterogeneous truth: the policy leaves the static prompt for some queries, and says why
    assert 0 < rec.departs_from_static.mean() < 1 and rec.reason[rec.departs_from_static].str.contains("over").all()
    assert rec.reason[~rec.departs_from_static].isna().all()
    assert (rec.effect_ci_low[rec.departs_from_static] > -1).all()
    # the policy is the pool choice of the run (same head, incumbent, trust region and z)
    chosen = [pool.policy.prompt_ids[i] for i in pool.policy.choice]
    assert rec.recommended_prompt_id.tolist() == chosen
    best = json.loads(paths["best_static"].read_text())
    assert best["logged"]["prompt_id"] in {"p0", "p1", "p2", "p3", "p4"} and "uplift_vs_best_logged" in best["search"]
    page = paths["report"].read_text()
    assert "plots/" not in page and page.count("src='data:image/png;base64,") == 4  # self-contained
    for png in ("prompt_effects", "policy_value", "uplift_by_tier", "causal_vs_noncausal"):
        assert (tmp_path / "plots" / f"{png}.png").stat().st_size > 1000
    assert "id='recommendation'" in page and evaluation["recommendation"]["headline"] in html.unescape(page)


def test_simulated_confounding_draws_logs_from_training_queries() -> None:
    reps, y, table = _synthetic(n_q=60)
    holdout = HoldoutConfig(simulate_confounding="latent", confounding_strength=3.0, logged_per_query=4)
    train, _ = split_queries(reps.query_texts, holdout.test_fraction, 0)
    logs = training_logs(table, reps, train, holdout, seed=0)
    assert len(logs.q) == 4 * len(train) and set(np.unique(logs.q)) <= set(train)
    assert set(np.unique(logs.y)) <= {0.0, 1.0}
    with pytest.raises(ConfigError, match="simulate_confounding"):
        HoldoutConfig(simulate_confounding="strong")


def test_sparse_logs_evaluate_what_they_can_and_still_write_outputs(tmp_path: Path) -> None:
    """One logged prompt per query (observational logs): held-out outcomes rarely cover the choice."""
    reps, y, table = _synthetic(n_q=200)
    logged = np.random.default_rng(3).integers(0, 5, size=200)
    keep = np.flatnonzero(reps.row_prompt == logged[reps.row_query])
    reps.row_query, reps.row_prompt, y, table = reps.row_query[keep], reps.row_prompt[keep], y[keep], table.take(keep)
    cfg = _cfg(query_beams=0, children_per_beam=3)
    train, test = split_queries(reps.query_texts, cfg.holdout.test_fraction, 0)
    logs = training_logs(table, reps, train, cfg.holdout, seed=0)
    causal, outcome = fit_models(reps, logs, cfg)
    pool = choose_pool(reps, table, logs, test, causal, outcome, cfg)
    for ev in pool.evaluations.values():
        assert "skipped" in ev or ev["n_dropped"] > 0
    result = generative_search(table, reps, pool.head, cfg, hash_embed)
    _, paths = write_run_outputs(tmp_path, reps, cfg, causal, pool, result, train, test, {"fit": 1.0})
    assert paths["report"].exists() and pq.read_table(paths["assignment"]).num_rows == 200


def test_a_prompt_never_run_on_a_held_out_query_leaks_no_runtime_warning(tmp_path: Path) -> None:
    """Issue 21, item 18: observational logs where a prompt never ran on a held-out query leaked
    `RuntimeWarning: Mean of empty slice` (np.nanmean, which np.errstate does not silence) from the report's
    causal-versus-non-causal comparison, whose centered values all became NaN; the comparison now leaves the
    unmeasured prompt out."""
    import warnings

    from cpo_engine.workflows.run_outputs import model_comparison

    reps, y, table = _synthetic(n_q=200)
    cfg = _cfg(query_beams=0, children_per_beam=3)
    train, test = split_queries(reps.query_texts, cfg.holdout.test_fraction, 0)
    logged = np.random.default_rng(3).integers(0, 4, size=200)
    logged[train[:20]] = 4  # p4: logged on 20 training queries, on no held-out one
    keep = np.flatnonzero(reps.row_prompt == logged[reps.row_query])
    reps.row_query, reps.row_prompt, y, table = reps.row_query[keep], reps.row_prompt[keep], y[keep], table.take(keep)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        logs = training_logs(table, reps, train, cfg.holdout, seed=0)
        causal, outcome = fit_models(reps, logs, cfg)
        pool = choose_pool(reps, table, logs, test, causal, outcome, cfg)
        _, paths = write_run_outputs(tmp_path, reps, cfg, causal, pool, None, train, test, {"fit": 1.0})
    assert paths["report"].exists() and not np.isfinite(pool.Y_test[:, 4]).any()
    comparison = model_comparison(np.arange(5.0), np.arange(5.0), pool.Y_test, [f"p{j}" for j in range(5)])
    assert set(comparison) == {"causal (DML)", "non-causal (outcome model)"}
    for pred, meas, labels in comparison.values():
        assert labels == ["p0", "p1", "p2", "p3"] and np.isfinite(meas).all() and abs(meas.sum()) < 1e-9
        np.testing.assert_allclose(pred, [-1.5, -0.5, 0.5, 1.5])
    assert model_comparison(np.zeros(5), np.zeros(5), pool.Y_test[:, [4, 4, 4, 4, 0]], list("abcde")) == {}


def test_a_prompt_logged_only_on_held_out_queries_is_off_support_not_an_invalid_propensity(tmp_path: Path,
                                                                                          caplog) -> None:
    """Issue 21 follow-up: a prompt logged only on held-out queries (no training row) got propensity 0 from the
    propensity model fitted on the training logs, and `cpo run` failed in the off-policy step with "column
    'propensity' ...: propensities must be in (0, 1]", a column the user never gave. With no training evidence the
    prompt is off support: its held-out rows are left out of the estimates, and the values say so."""
    reps, y, table = _synthetic(n_q=200)
    cfg = _cfg(query_beams=0, children_per_beam=3)
    train, test = split_queries(reps.query_texts, cfg.holdout.test_fraction, 0)
    logged = np.random.default_rng(3).integers(0, 4, size=200)
    logged[test[:10]] = 4  # p4: logged on 10 held-out queries, on no training one
    keep = np.flatnonzero(reps.row_prompt == logged[reps.row_query])
    keep = keep[np.unique(reps.row_query[keep], return_index=True)[1]]  # one row per query
    reps.row_query, reps.row_prompt, y, table = reps.row_query[keep], reps.row_prompt[keep], y[keep], table.take(keep)
    logs = training_logs(table, reps, train, cfg.holdout, seed=0)
    assert 4 not in set(logs.p) and logs.propensity is None
    causal, outcome = fit_models(reps, logs, cfg)
    with caplog.at_level("WARNING", logger="cpo_engine.workflows.ope"):
        pool = choose_pool(reps, table, logs, test, causal, outcome, cfg)
    values = pool.policy_values
    assert "prompt(s) p4 were logged only on held-out queries" in values.method
    assert "10 logged row(s) on 10 queries are left out" in values.method
    assert any("p4" in r.getMessage() and "log them on training queries" in r.getMessage() for r in caplog.records)
    assert values.diagnostics["untrained_prompts"] == {"p4": 10}
    p4 = next(o for o in values.diagnostics["overlap_by_prompt"] if o["prompt_id"] == "p4")
    assert p4["mean"] == 0.0 and p4["share_off_support"] == 1.0
    for name, e in values.estimates.items():
        assert 0.0 <= e.value <= 1.0 and e.n_queries == len(test) - 10, name
    evaluation, paths = write_run_outputs(tmp_path, reps, cfg, causal, pool, None, train, test, {"fit": 1.0})
    summary = json.loads(paths["summary"].read_text())
    assert "p4 were logged only on held-out queries" in summary["policy_values"]["method"]
    assert paths["report"].exists()


def test_static_agreement_warns_when_model_and_data_disagree(caplog) -> None:
    from cpo_engine.causal.head import LinearHead
    from cpo_engine.workflows.run import static_agreement

    head = LinearHead(coef=np.array([[1.0, 0.0]]), cov=np.eye(2) * 1e-4, featurize=lambda X: np.ones((len(X), 1)),
                      t_ref=np.zeros(2))
    T = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    assert static_agreement(head, np.zeros((3, 1)), T, np.array([0.1, 0.2, 0.3]), ["a", "b", "c"]) == pytest.approx(1)
    assert not caplog.records
    rho = static_agreement(head, np.zeros((3, 1)), T, np.array([0.3, 0.2, 0.1]), ["a", "b", "c"])
    assert rho == pytest.approx(-1) and "ranks prompt 'c' first" in caplog.text and "best static prompt is 'a'" in caplog.text
