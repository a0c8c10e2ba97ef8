"""Policy values in `cpo run` (measured on a full grid, estimated off-policy on observational logs, with
and without a propensity column) and the `cpo ope` command on logs drawn from the bundled example."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cpo_engine.causal.evidence import ESTIMATED, MEASURED
from cpo_engine.causal.ope import OverlapWarning
from cpo_engine.causal.policy_values import LOGGING
from cpo_engine.data.grid import split_queries
from cpo_engine.workflows.run import choose_pool, fit_models, training_logs
from tests.test_workflow_run import _cfg, _synthetic


def _observational(n_q: int, with_propensity: bool, seed: int = 3):
    """One prompt per query, drawn with a known policy that depends on the query feature x0."""
    reps, y, table = _synthetic(n_q=n_q)
    rng = np.random.default_rng(seed)
    logit = 1.5 * np.outer(reps.X[:, 0], np.linspace(-1, 1, 5))
    pi0 = 0.8 * np.exp(logit) / np.exp(logit).sum(1, keepdims=True) + 0.2 / 5
    logged = (pi0.cumsum(1) < rng.random(n_q)[:, None]).sum(1)
    first = np.flatnonzero((reps.row_prompt == logged[reps.row_query]) & (np.arange(len(y)) % 3 == 0))
    reps.row_query, reps.row_prompt = reps.row_query[first], reps.row_prompt[first]
    table = table.take(pa.array(first))
    if with_propensity:
        table = table.append_column("propensity", pa.array(pi0[reps.row_query, reps.row_prompt]))
    return reps, table


def _pool(reps, table):
    cfg = _cfg()
    train, test = split_queries(reps.query_texts, cfg.holdout.test_fraction, 0)
    logs = training_logs(table, reps, train, cfg.holdout, seed=0)
    causal, outcome = fit_models(reps, logs, cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OverlapWarning)  # the workflow keeps them in the estimates, never prints twice
        return choose_pool(reps, table, logs, test, causal, outcome, cfg), test


def test_run_measures_policy_values_on_a_full_grid():
    reps, _, table = _synthetic(n_q=200)
    pool, test = _pool(reps, table)
    values = pool.policy_values
    assert values.evidence == MEASURED and values.method == "held-out recorded outcomes"
    ev = pool.evaluations["causal_lcb"]
    lcb = values.estimates["per-query, causal (LCB)"]
    assert lcb.value == pytest.approx(ev["policy_value"]) and lcb.n_queries == len(test)
    assert values.vs_static["per-query, causal (LCB)"]["diff"] == pytest.approx(ev["vs_static"]["diff"])
    assert values.estimates[LOGGING].value == pytest.approx(ev["random_value"])  # a full grid logs every prompt


@pytest.mark.parametrize("with_propensity", [True, False])
def test_run_estimates_policy_values_on_observational_logs(with_propensity):
    reps, table = _observational(600, with_propensity)
    pool, test = _pool(reps, table)
    values = pool.policy_values
    assert values.evidence == ESTIMATED and values.method.startswith("doubly robust")
    assert all("skipped" in ev for ev in pool.evaluations.values())  # no selected subset of queries is scored
    source = values.diagnostics["propensity_source"]
    assert source.startswith("logged") if with_propensity else source.startswith("estimated")
    assert len(values.diagnostics["overlap_by_prompt"]) == 5
    labelled = values.labelled()
    assert labelled[LOGGING].evidence == MEASURED
    for name in ("per-query, causal (LCB)", "per-query, non-causal", f"best static ({reps.prompt_ids[pool.static_index]})"):
        v = labelled[name]
        assert v.evidence == ESTIMATED and v.ci_low < v.value < v.ci_high and name in values.vs_logging
        assert set(values.all_estimates[name]) == {"dm", "ipw", "snips", "dr", "sndr"}
    logged_mean = float(np.mean([r["score"] for r in table.to_pylist()
                                 if r["query_id"] in set(reps.query_ids[test].astype(str))]))
    assert values.estimates[LOGGING].value == pytest.approx(logged_mean)
    d = values.to_dict()
    json.dumps(d)
    assert d["values"]["per-query, causal (LCB)"]["kind"] == "estimated"


def test_cpo_ope_values_policies_on_logs_from_the_bundled_example(small_example, tmp_path, capsys):
    from cpo_engine.causal.evaluation import EvaluationConfig, observational_logs
    from cpo_engine.cli import main

    grid = pq.read_table(small_example)
    logs = observational_logs(grid, EvaluationConfig(confounding="observable", strength=1.0, exploration=0.3),
                              per_query=2, seed=0)
    path = tmp_path / "logs.parquet"
    pq.write_table(logs, path)
    qids = sorted(set(logs.column("query_id").to_pylist()))
    assignment = tmp_path / "assignment.csv"
    assignment.write_text("query_id,recommended_prompt_id\n" + "".join(
        f"{q},{'CoT' if i % 2 else 'APE'}\n" for i, q in enumerate(qids)))
    common = ["--set", f"embed.cache_dir={tmp_path / 'cache'}", "--set", "embed.device=cpu",
              "--set", "pca.query_components=4", "--set", "pca.prompt_components=8", "--cv", "3"]
    assert main(["ope", str(path), "--policy", str(assignment), "--policy", "CoT", "--out", str(tmp_path / "ope"),
                 *common]) == 0
    out = json.loads((tmp_path / "ope" / "ope.json").read_text())
    manifest = json.loads((tmp_path / "ope" / "manifest.json").read_text())
    assert manifest["kind"] == "ope" and manifest["outputs"] == {"json": "ope.json", "table": "ope.md"}
    assert out["n_queries"] == len(qids) and out["evidence"] == ESTIMATED
    assert set(out["values"]) == {"assignment", "static (CoT)", LOGGING}
    for name in ("assignment", "static (CoT)"):
        v = out["values"][name]
        assert v["ci_low"] < v["value"] < v["ci_high"] and out["vs_logging"][name]["n"] == len(qids)
    assert out["diagnostics"]["reward_model"] == "cross-fitted on the logs"
    printed = capsys.readouterr().out
    assert "| assignment |" in printed and "ope.md" in printed
    _check_decision(printed, out)
    assert out["coverage"].startswith(f"valued on {len(qids)} of {len(qids)} logged queries")
    # an assignment with a split column is valued on its test rows, and the output says so
    split = tmp_path / "split.csv"
    split.write_text("query_id,recommended_prompt_id,split\n" + "".join(
        f"{q},CoT,{'test' if i % 3 == 0 else 'train'}\n" for i, q in enumerate(qids)))
    assert main(["ope", str(path), "--policy", str(split), "--out", str(tmp_path / "ope2"), *common]) == 0
    printed = capsys.readouterr().out
    out2 = json.loads((tmp_path / "ope2" / "ope.json").read_text())
    n_test = len(qids[::3])
    assert out2["n_queries"] == n_test and _check_decision(printed, out2)
    assert (f"valued on {n_test} of {len(qids)} logged queries" in printed and
            f"only its {n_test} of {len(qids)} rows with split == 'test' are used (--queries auto" in printed)
    assert main(["ope", str(path), "--policy", "no-such-prompt", "--out", str(tmp_path / "x"), *common]) == 2
    assert "neither a file nor a logged prompt id" in capsys.readouterr().err


def _check_decision(printed: str, out: dict) -> bool:
    """The output ends with the decision line, the table's rows are sorted by value, best first."""
    last = printed.strip().splitlines()[-1]
    d = out["decision"]
    assert last == d["line"] and (last.startswith(f"deploy {d['deploy']}: value ") if d["deploy"] else
                                  last.startswith("keep the logging policy"))
    values = [float(line.split(" | ")[1].split()[0]) for line in printed.splitlines()
              if line.startswith("| ") and not line.startswith("| policy") and not line.startswith("|---")]
    assert len(values) == len(out["values"]) and values == sorted(values, reverse=True)
    return True


def test_no_help_text_shows_a_doubled_percent_sign():
    from cpo_engine.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict))
    for name, sub in subparsers.choices.items():
        assert "%%" not in sub.format_help(), name


def test_ope_settings_reach_every_workflow_and_flags_parse():
    from cpo_engine.cli import build_parser
    from cpo_engine.commands import config_from_args
    from cpo_engine.workflows.config import EvaluateConfig, OffPolicyConfig, OptimizeConfig, RunConfig

    for command, cls in (("run", RunConfig), ("optimize", OptimizeConfig), ("evaluate", EvaluateConfig),
                         ("ope", OffPolicyConfig)):
        args = build_parser().parse_args([command, "--set", "ope.min_propensity=0.05", "--set", "ope.estimator=sndr"])
        cfg = config_from_args(args, cls)
        assert cfg.ope.min_propensity == 0.05 and cfg.ope.estimator == "sndr"
    args = build_parser().parse_args(["ope", "--policy", "a.parquet", "--policy", "CoT", "--min-propensity", "0.02"])
    cfg = config_from_args(args, OffPolicyConfig)
    assert cfg.policies == ["a.parquet", "CoT"] and cfg.ope.min_propensity == 0.02
    args = build_parser().parse_args(["evaluate", "--sweep", "train_queries,prompt_components", "--sweep-seeds", "2",
                                      "--exploration", "0.2", "--no-ope"])
    cfg = config_from_args(args, EvaluateConfig)
    assert cfg.sweep.axes == ["train_queries", "prompt_components"] and cfg.sweep.seeds == 2
    assert cfg.evaluation.exploration == 0.2 and cfg.evaluation.ope is False
