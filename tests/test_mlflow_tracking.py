"""`--mlflow URI`: a finished `cpo run` logged to a real local MLflow store (sqlite), read back with MLflow's own
client: parameters, metrics, the run folder as artifacts, and the recommended prompt in the prompt registry."""

from __future__ import annotations

import json
import sys

import pytest

from cpo_engine.cli import main

pytest.importorskip("mlflow", reason="the mlflow extra (in requirements/dev.lock)")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_run_logs_to_mlflow_store(small_example, tmp_path, capsys):
    from mlflow import MlflowClient

    out, uri = tmp_path / "run", f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["run", "--data", str(small_example), "--out", str(out), "--proposer", "none", "--mlflow", uri,
                 "--set", f"embed.cache_dir={tmp_path / 'cache'}"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.get_experiment_by_name("cpo")
    (run,) = client.search_runs([exp.experiment_id])
    data = run.data
    # parameters: the run's config, flattened; the tracking section itself is not a parameter
    assert data.params["causal.cv"] == str(manifest["config"]["causal"]["cv"])
    assert data.params["data.path"] == str(small_example) and data.params["proposer.kind"] == "none"
    assert not any(k.startswith("tracking") for k in data.params)
    # metrics: the static prompt's value and interval, the policy values, the stage timings
    choice = summary["static_choice"]
    for key in ("value", "ci_low", "ci_high"):
        assert data.metrics[f"summary.static_choice.{key}"] == pytest.approx(choice[key])
    lcb = summary["policy_values"]["values"]["per-query, causal (LCB)"]
    assert data.metrics["summary.policy_values.values.per-query_causal_LCB.value"] == pytest.approx(lcb["value"])
    assert data.metrics["time_s.fit"] == pytest.approx(manifest["timings_s"]["fit"])
    assert data.tags["cpo.kind"] == "run" and data.tags["cpo.data_sha256"] == manifest["data"]["sha256"]
    # the run folder as artifacts
    top = {a.path for a in client.list_artifacts(run.info.run_id, "folder")}
    assert {"folder/summary.json", "folder/manifest.json", "folder/report.html", "folder/model"} <= top
    assert "folder/model/bundle.json" in {a.path for a in client.list_artifacts(run.info.run_id, "folder/model")}
    assert not any(".cpo.lock" in p for p in top)
    # the recommended prompt in the prompt registry, tagged with the run and its evidence
    assert data.tags["cpo.prompt"] == "prompts:/cpo-prompt/1"
    prompt = client.load_prompt("prompts:/cpo-prompt/1")
    assert prompt.template == summary["recommendation"]["static_prompt_text"]
    assert prompt.tags["cpo.run_id"] == run.info.run_id
    assert prompt.tags["cpo.prompt_id"] == summary["recommendation"]["static_prompt_id"]
    assert prompt.tags["cpo.evidence"] == choice["sentence"]
    # artifacts beside the database, not in the folder the command ran from
    assert (tmp_path / "mlartifacts").is_dir()


def test_mlflow_without_the_extra_is_a_clear_error(small_example, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` fails as when the extra is not installed
    out = tmp_path / "run"
    assert main(["run", "--data", str(small_example), "--out", str(out), "--mlflow",
                 f"sqlite:///{tmp_path / 'mlflow.db'}"]) == 2
    err = capsys.readouterr().err
    assert "cpo-engine[mlflow]" in err and "Traceback" not in err
    assert not out.exists()  # refused before any work


def test_mlflow_uri_with_a_password_is_refused(capsys):
    assert main(["run", "--mlflow", "postgresql://user:hunter2@db/mlflow"]) == 2
    err = capsys.readouterr().err
    assert "MLFLOW_TRACKING_URI" in err and "--mlflow env" in err


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_promoting_night_registers_the_live_prompt(tmp_path, encoder):
    """A night on a grid where 'plain' clearly wins (tests/nightly_logs.py) promotes it on held-out fresh logs; with
    --mlflow the prompt that went live is a registry version aliased 'live', with live.json's evidence."""
    from mlflow import MlflowClient

    from cpo_engine.causal import CausalConfig
    from cpo_engine.search.config import ProposerConfig
    from cpo_engine.settings import NightlyConfig, PromoteConfig, TrackingConfig
    from cpo_engine.workflows.common import Representer
    from cpo_engine.workflows.nightly import run_nightly
    from tests.nightly_logs import write_two_days

    _, grid_day = write_two_days(tmp_path / "logs")
    state, uri = tmp_path / "state", f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = NightlyConfig(state=str(state), new=str(grid_day), date="2026-01-02", causal=CausalConfig(cv=3),
                        proposer=ProposerConfig(kind="none"), promote=PromoteConfig(holdout_share=0.5),
                        tracking=TrackingConfig(mlflow_uri=uri))
    cfg.embed.device = "cpu"
    result = run_nightly(cfg, representer=Representer(cfg.embed, cache_dir=state / "cache", encoder=encoder))
    assert result.promotion["status"] == "promoted", result.promotion["reason"]
    live = json.loads((state / "live.json").read_text())
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("cpo").experiment_id])
    assert run.data.tags["cpo.kind"] == "nightly" and run.data.params["date"] == "2026-01-02"
    diff = live["evidence"]["difference"]
    assert run.data.metrics["night.promotion.evidence.difference.ci_low"] == pytest.approx(diff["ci_low"])
    version = client.get_prompt_version_by_alias("cpo-prompt", "live")
    assert version.template == live["text"] and version.tags["cpo.prompt_id"] == live["id"] == "plain"
    assert version.tags["cpo.why"] == "promoted" and version.tags["cpo.run_id"] == run.info.run_id
    assert json.loads(version.tags["cpo.evidence"])["difference"]["ci_low"] == pytest.approx(diff["ci_low"])
    assert "folder/report.json" in {a.path for a in client.list_artifacts(run.info.run_id, "folder")}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_run_with_a_verify_stage_and_cpo_verify_log_the_measured_uplifts(small_example, tmp_path, capsys):
    """The replay backend (the logs' recorded outcomes) as the LLM: the run's verify stage and `cpo verify RUN` log
    each arm's measured uplift; a prompt is registered by `cpo verify` only when one measured better with a promotable
    uplift (for the run: else its recommended static prompt)."""
    from mlflow import MlflowClient

    from cpo_engine.workflows.tracking import metric_name

    out, uri = tmp_path / "run", f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = ["--set", "generation.backend.kind=replay", "--set", f"generation.backend.replay.path={small_example}",
              "--set", "generation.backend.replay.text_column=prompt_text", "--set", "verify.seeds=all",
              "--set", "verify.max_queries=20", "--set", f"embed.cache_dir={tmp_path / 'cache'}", "--mlflow", uri]
    assert main(["run", "--data", str(small_example), "--out", str(out), "--proposer", "none", *common]) == 0
    assert main(["verify", str(out), *common]) == 0
    report = json.loads((out / "verify" / "verification.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("cpo").experiment_id], order_by=["attributes.start_time"])
    by_kind = {r.data.tags["cpo.kind"]: r for r in runs}
    assert set(by_kind) == {"run", "verify"}
    for arm in report["arms"][1:]:  # each arm's measured uplift over the incumbent, in both MLflow runs
        key = metric_name(f"verify.arms.{arm['id']}.uplift_vs_baseline.value")
        for kind in ("run", "verify"):
            assert by_kind[kind].data.metrics[key] == pytest.approx(arm["uplift_vs_baseline"]["value"])
    assert by_kind["run"].data.metrics["summary.static_choice.value"] == pytest.approx(summary["static_choice"]["value"])
    assert by_kind["verify"].data.params["verify.max_queries"] == "20"  # the verification's own config
    assert by_kind["verify"].data.metrics["cost.llm_calls"] == 0  # rerun: every call resumed from the store
    # on 20 held-out queries no prompt beats the incumbent beyond its interval: `cpo verify` registers nothing, the
    # run its recommended static prompt
    assert report["best_promotable"] is None
    assert "cpo.prompt" not in by_kind["verify"].data.tags
    prompt = client.load_prompt(by_kind["run"].data.tags["cpo.prompt"])
    assert prompt.template == summary["recommendation"]["static_prompt_text"] and prompt.tags["cpo.why"] == "recommended"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_optimize_logs_to_mlflow_store(small_example, tmp_path, capsys):
    """`cpo optimize --mlflow URI` (as `cpo run`): its config, the policy values of best_static_prompt.json, the
    folder as artifacts, and the saved model's static choice in the prompt registry (never a searched,
    unverified candidate)."""
    from mlflow import MlflowClient

    common = ["--set", f"embed.cache_dir={tmp_path / 'cache'}", "--set", "embed.device=cpu"]
    assert main(["fit", str(small_example), "--out", str(tmp_path / "fit"), "--cv", "2", *common]) == 0
    out, uri = tmp_path / "opt", f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["optimize", str(small_example), "--model", str(tmp_path / "fit"), "--out", str(out), "--rounds", "1",
                 "--children", "4", "--beam-width", "2", "--mlflow", uri, *common]) == 0
    best = json.loads((out / "best_static_prompt.json").read_text())
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("cpo").experiment_id])
    data = run.data
    assert data.tags["cpo.kind"] == "optimize" and data.params["mode"] == "both" and data.params["beam.rounds"] == "1"
    assert not any(k.startswith("tracking") for k in data.params)
    uplift = best["search_static"]["uplift_vs_best_logged"]
    assert data.metrics["optimize.search_static.uplift_vs_best_logged"] == pytest.approx(uplift)
    top = {a.path for a in client.list_artifacts(run.info.run_id, "folder")}
    assert {"folder/assignment.parquet", "folder/best_static_prompt.json", "folder/manifest.json"} <= top
    prompt = client.load_prompt(data.tags["cpo.prompt"])
    assert prompt.template == best["pool_static"]["text"] and prompt.tags["cpo.why"] == "recommended"
    assert prompt.tags["cpo.prompt_id"] == best["pool_static"]["prompt_id"]
    assert prompt.tags["cpo.evidence"] == best["pool_static"]["evidence"] and best["pool_static"]["evidence"]
