"""The verify stage: arm choice, measured intervals (a Monte Carlo at the defaults), the promotion
rule, calibration, the marks on a run's outputs, and `cpo run` / `cpo verify` / `cpo optimize` end to
end with the replay backend (recorded held-out outcomes stand in for the LLM; the real engines are
in tests/engines/test_verify_engines.py)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cpo_engine.causal.evidence import MEASURED
from cpo_engine.config import load_config
from cpo_engine.workflows.config import LoopConfig, RunConfig, VerifyConfig
from cpo_engine.workflows.verify import (Arm, Predictions, best_arm, calibration, labelled, pick_arms, promotable,
                                         summarize)


def test_pick_arms_keeps_baseline_first_and_skips_logged_and_off_support_candidates():
    ids, texts = ["a", "b", "c"], ["Answer:", "Think step by step.", "Be brief."]
    cands = pa.table({"id": ["a", "x", "y", "z", "w"],
                      "text": ["Answer:", "Off support prompt.", "answer:", "New one.", "Another new one."],
                      "in_support": [True, False, True, True, True], "objective": [0.3, 0.9, 0.2, 0.1, 0.05]})
    arms = pick_arms(ids, texts, incumbent=1, static=0, searched=cands, cfg=VerifyConfig(top_k=2))
    assert [(a.id, a.role) for a in arms] == [("b", "incumbent"), ("a", "best_static"), ("z", "searched"),
                                              ("w", "searched")]
    arms = pick_arms(ids, texts, 1, 1, None, VerifyConfig(seeds="all"))
    assert [a.id for a in arms] == ["b", "a", "c"] and arms[0].role == "incumbent"


def test_measured_interval_never_collapses_and_the_value_is_the_plain_mean():
    base = np.array([1.0, 0, 1, 0, 1, 1, 0, 0])
    same = labelled(base, base, MEASURED, "test")
    assert same.value == 0 and same.ci_low < 0 < same.ci_high  # identical answers: not "0 (0 to 0)"
    better = labelled(np.ones(8), base, MEASURED, "test")
    assert better.value == pytest.approx(0.5) and better.ci_low < 0.5 < better.ci_high
    assert labelled(np.array([np.nan, 1.0]), np.array([0.0, np.nan]), MEASURED, "t") is None  # < 2 paired queries


def test_promotion_rule_and_false_promotion_rate_at_the_defaults():
    """Monte Carlo (bench/bench_verify_mc.py at small size): with no true uplift the rule promotes at most
    the one-sided 2.5% it targets, and the interval covers the true uplift."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "bench_verify_mc", Path(__file__).resolve().parents[1] / "bench" / "bench_verify_mc.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    simulate = mod.simulate

    null = simulate(40, 1.0, 0.0, reps=1500, seed=1)
    assert null["promotion_rate"] <= 0.03 and null["coverage"] >= 0.93, null
    sparse = simulate(40, 0.1, 0.1, reps=800, seed=2)  # few discordant queries, tiny true uplift
    assert sparse["coverage"] >= 0.93, sparse
    power = simulate(40, 1.0, 0.3, reps=400, seed=3)
    assert power["promotion_rate"] >= 0.6, power
    tie = labelled(np.zeros(40), np.zeros(40), MEASURED, "t")
    assert not promotable(tie, 0.0) and not promotable(None, 0.0)


def _pred(n: int, static: list[float], choice: list[int] | None = None) -> Predictions:
    k = len(static)
    eff = np.tile(np.array(static), (n, 1))
    return Predictions(effect=eff, se=np.full((n, k), 0.01), static_effect=np.array(static),
                       static_se=np.full(k, 0.01), choice=np.array(choice if choice is not None else [0] * n))


def test_summarize_measures_every_arm_against_the_baseline_and_calibrates():
    rng = np.random.default_rng(0)
    n = 60
    truth = [0.4, 0.2, 0.6, 0.7]
    Y = np.stack([(rng.random(n) < p).astype(float) for p in truth], axis=1)
    arms = [Arm(f"p{j}", f"prompt {j}", "incumbent" if j == 0 else "searched") for j in range(4)]
    out = summarize(arms, Y, _pred(n, [0.0, -0.2, 0.2, 0.3], choice=[3] * n), "test")
    rows = {a["id"]: a for a in out["arms"]}
    assert rows["p0"]["verdict"] == "baseline" and rows["p0"]["uplift_vs_baseline"] is None
    for j in (1, 2, 3):
        u = rows[f"p{j}"]["uplift_vs_baseline"]
        assert u["kind"] == "measured" and u["value"] == pytest.approx(Y[:, j].mean() - Y[:, 0].mean())
        assert rows[f"p{j}"]["predicted_uplift"]["kind"] == "predicted"
    assert out["policy"]["uplift_vs_baseline"]["value"] == pytest.approx(rows["p3"]["uplift_vs_baseline"]["value"])
    assert out["calibration"]["n_prompts"] == 3 and out["calibration"]["spearman"] is not None
    best = best_arm(out, margin=0.0)
    assert best is None or best["uplift_vs_baseline"]["ci_low"] >= 0
    assert best_arm(out, margin=1.01) is None
    # a per-query baseline (the live policy): uplifts are measured against its routed outcomes
    route = np.array([1, 2] * (n // 2))
    out2 = summarize(arms, Y, _pred(n, [0.0, -0.2, 0.2, 0.3]), "test", baseline_route=route)
    base = Y[np.arange(n), route]
    assert out2["arms"][0]["uplift_vs_baseline"]["value"] == pytest.approx(Y[:, 0].mean() - base.mean())


def test_calibration_statistics():
    c = calibration(np.array([0.1, 0.2, 0.3, -0.1]), np.array([0.05] * 4), np.array([0.12, 0.15, 0.5, -0.2]))
    assert c["spearman"] == pytest.approx(1.0) and c["kendall_tau"] == pytest.approx(1.0)
    assert c["mean_abs_error"] == pytest.approx(np.mean([0.02, 0.05, 0.2, 0.1]))
    assert c["interval_coverage"] == pytest.approx(0.5) and c["sign_agreement"] == 1.0


def test_coverage_allowing_for_the_measurement_error_is_95_percent_when_intervals_are_exact():
    """Monte Carlo: predicted uplifts with exact 95% intervals (pred ~ N(truth, s^2)) against measured uplifts that
    are estimates themselves (meas ~ N(truth, e^2)): the plain coverage of the measured value falls short of 95%,
    the coverage allowing for the measurement's error is 95% within MC error."""
    rng = np.random.default_rng(0)
    n = 20_000
    truth = rng.normal(0, 0.2, n)
    s, e = rng.uniform(0.02, 0.1, n), rng.uniform(0.02, 0.1, n)
    c = calibration(truth + s * rng.standard_normal(n), s, truth + e * rng.standard_normal(n), e)
    mc_se = np.sqrt(0.95 * 0.05 / n)
    assert abs(c["interval_coverage_with_measurement_error"] - 0.95) < 4 * mc_se
    assert c["interval_coverage"] < 0.95 - 0.05
    wide = calibration(truth + s * rng.standard_normal(n), 0.5 * s, truth + e * rng.standard_normal(n), e)
    assert wide["interval_coverage_with_measurement_error"] < 0.90  # intervals too narrow: caught
    assert "interval_coverage_with_measurement_error" not in calibration(np.zeros(2), np.ones(2), np.zeros(2))


def test_workflow_sections_keep_their_defaults_when_one_key_is_set():
    cfg = load_config(LoopConfig, None, ["verify.top_k=2", "generation.backend.model=m"])
    assert cfg.verify.top_k == 2 and cfg.verify.seeds == "all" and cfg.verify.max_tokens == 16
    assert cfg.generation.template.position == "prefix" and cfg.generation.backend.openai.max_concurrency == 2
    assert load_config(RunConfig, None, []).generation is None  # no LLM: no verify stage
    run = load_config(RunConfig, None, ["generation.backend.openai.base_url=http://h/v1"])
    assert run.generation.backend.openai.base_url == "http://h/v1" and run.verify == VerifyConfig()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_run_verify_stage_and_cpo_verify_with_recorded_outcomes(small_example, tmp_path, capsys):
    """`cpo run` with the replay backend verifies every logged prompt on held-out queries, marks the
    assignment and report; `cpo verify RUN` reruns it with no new call; `cpo optimize` verifies too."""
    from cpo_engine.cli import main

    out = tmp_path / "run"
    common = ["--set", "generation.backend.kind=replay", "--set", f"generation.backend.replay.path={small_example}",
              "--set", "generation.backend.replay.text_column=prompt_text", "--set", "verify.seeds=all",
              "--set", "verify.max_queries=20", "--set", f"embed.cache_dir={tmp_path / 'cache'}"]
    assert main(["run", "--data", str(small_example), "--out", str(out), "--proposer", "none", *common]) == 0
    printed = capsys.readouterr().out  # the estimate of the calls comes before the first call
    assert printed.index("verify: at most 320 LLM calls (20 held-out queries x 16 prompts") < printed.index(
        "rows already committed")
    cost = json.loads((out / "manifest.json").read_text())["cost"]
    assert cost["stages"]["verify"]["llm_calls"] == 320 == cost["total"]["llm_calls"]
    report = json.loads((out / "verify" / "verification.json").read_text())
    assert report["budget"]["queries"] == 20 and len(report["arms"]) == 16
    assert report["arms"][0]["role"] == "incumbent" and report["generation"]["errors_total"] == 0
    assert all(a["uplift_vs_baseline"]["kind"] == "measured" for a in report["arms"][1:])
    assert all(a["predicted_uplift"]["kind"] == "predicted" for a in report["arms"][1:])
    assert -1 <= report["calibration"]["spearman"] <= 1
    held_out = {q for q, s in zip(*pq.read_table(out / "search" / "assignment.parquet",
                                                 columns=["query_id", "split"]).to_pydict().values()) if s == "test"}
    verified = pq.read_table(out / "verify" / "verified_triplets.parquet")
    assert set(verified["query_id"].to_pylist()) <= held_out and verified.num_rows == 20 * 16
    a = pq.read_table(out / "search" / "assignment.parquet")
    assert set(a["recommended_verification"].to_pylist()) == {"verified"}  # every logged prompt ran
    assert "Verification with the LLM" in (out / "report.html").read_text()
    assert json.loads((out / "manifest.json").read_text())["outputs"]["verification"] == "verify/verification.json"
    capsys.readouterr()
    assert main(["verify", str(out), *common]) == 0
    assert "0 to generate" in capsys.readouterr().out  # resumed: nothing ran twice
    page = (out / "report.html").read_text()  # verified twice: one section, rendered with the run's own
    assert page.count("data-key='verification'") == 1 and page.count("Verification with the LLM") == 1
    assert "data-key='glossary'" in page and "data-key='policy_values'" in page
    opt = tmp_path / "opt"
    assert main(["optimize", str(small_example), "--model", str(out), "--out", str(opt), "--mode", "pool",
                 *common]) == 0
    assert json.loads((opt / "verify" / "verification.json").read_text())["arms"][0]["role"] == "incumbent"
    assert "recommended_verification" in pq.read_table(opt / "assignment.parquet").column_names
    from cpo_engine.workflows.common import read_kind

    assert [read_kind(f) for f in (out, out / "verify", opt, opt / "verify")] == ["run", "verify", "optimize", "verify"]
    assert main(["verify", str(opt), *common]) == 0  # an optimize folder, by its manifest's kind
    assert main(["verify", str(out / "verify"), *common]) == 2  # a verify folder is not a run to verify
    assert "kind 'verify'" in capsys.readouterr().err


def test_nothing_is_measured_when_no_call_succeeded_or_every_answer_is_empty(tmp_path):
    """A rerun of a verification whose every LLM call failed used to mark 300 rows 'verified' with a measured
    uplift of 0.0, and 100% empty answers passed as measured. Both are refused; a rerun retries failed calls."""
    from pathlib import Path

    from cpo_engine.exceptions import BackendError
    from cpo_engine.workflows.config import LLMConfig
    from cpo_engine.workflows.verify import check_measured, generate_config

    def rows(errors, answers):
        return pa.table({"query_id": ["q0", "q1"], "prompt_id": ["a", "b"], "score": [0.0, 0.0],
                         "error": pa.array(errors, pa.string()), "raw_answer": pa.array(answers, pa.string())})

    with pytest.raises(BackendError, match="no LLM call of this verification succeeded .*HTTP 503"):
        check_measured(rows(["HTTP 503: down", "HTTP 503: down"], [None, None]), {"store": "s"})
    with pytest.raises(BackendError, match="every one of the 2 LLM answers of this verification is empty"):
        check_measured(rows([None, None], ["", "  "]), {"store": "s"})
    check_measured(rows([None, "HTTP 503: down"], ["42", None]), {"store": "s"})  # some measured: fine
    gen = generate_config(LLMConfig(), Path(tmp_path / "q.parquet"), Path(tmp_path / "p.parquet"), tmp_path / "s",
                          "verify", VerifyConfig())
    assert gen.retry_errors  # a rerun after the server is back retries the failed calls


def test_a_predicted_uplift_beyond_the_score_scale_is_clipped_to_it():
    """A model fitted on too few queries predicted -22.9 (95% CI -22.9 to -22.9) for a prompt on a 0/1 grade
    (cpo loop, 20 training queries): no uplift on that scale lies outside [-1, 1], and a prediction beyond it
    is an extrapolation whose interval is the whole range."""
    rng = np.random.default_rng(1)
    Y = (rng.random((30, 3)) < 0.5).astype(float)
    arms = [Arm(f"p{j}", f"prompt {j}", "incumbent" if j == 0 else "logged") for j in range(3)]
    out = summarize(arms, Y, _pred(30, [0.0, -22.9, 0.3]), "test")
    far, near = out["arms"][1]["predicted_uplift"], out["arms"][2]["predicted_uplift"]
    assert far["value"] == -1.0 and (far["ci_low"], far["ci_high"]) == (-1.0, 1.0)  # an extrapolation: no interval
    assert near["value"] == pytest.approx(0.3)


def test_a_final_stage_with_more_coefficients_than_queries_is_flagged():
    """20 queries and 16 query features x 5 prompt features: the clustered standard errors collapse toward 0
    (a loop run printed 95% intervals of width 0); the fit says so instead of printing them silently."""
    import warnings

    from cpo_engine.causal import CausalRewardModel

    rng = np.random.default_rng(0)
    q = np.repeat(np.arange(20), 6)
    X, T = rng.normal(size=(20, 16))[q], np.tile(np.eye(6)[:, 1:], (20, 1))
    y = (rng.random(len(q)) < 0.5).astype(float)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = CausalRewardModel(cv=2, random_state=0).fit(y, T, X=X, groups=q)
    assert m.diagnostics_.n_params >= 20
    assert any("coefficients for 20 query clusters" in w for w in m.diagnostics_.warnings)
    assert any("standard errors cannot be estimated" in str(c.message) for c in caught)
