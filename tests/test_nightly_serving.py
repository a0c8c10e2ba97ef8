"""Nightly feeds serving (issue 23): every night's bundle holds the policy `cpo assign` applies; a state folder
serves what is live (``live.json``); without an LLM a prompt goes live only when its value on held-out fresh logs
beats the live one's with a lower confidence bound above the margin, and live.json keeps that evidence. Two nights
of real logs from the bundled example (tests/nightly_logs.py): day 1 observational (doubly robust values), day 2 a
grid where plain is clearly the best prompt (measured values)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cpo_engine.exceptions import ConfigError, DataError
from tests.nightly_logs import new_queries, write_two_days


def _cfg(state: Path, new: Path, date: str):
    from cpo_engine.causal import CausalConfig
    from cpo_engine.search.config import ProposerConfig
    from cpo_engine.settings import NightlyConfig, PromoteConfig

    cfg = NightlyConfig(state=str(state), new=str(new), date=date, causal=CausalConfig(cv=3),
                        proposer=ProposerConfig(kind="none"), promote=PromoteConfig(holdout_share=0.5))
    cfg.embed.device = "cpu"
    return cfg


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_two_nights_promote_on_held_out_logs_and_the_state_serves_the_live_prompt(tmp_path, encoder, capsys):
    from cpo_engine import Policy
    from cpo_engine.cli import main
    from cpo_engine.policy.policy import PolicyState
    from cpo_engine.workflows.common import Representer
    from cpo_engine.workflows.nightly import run_nightly

    day1, day2 = write_two_days(tmp_path / "logs")
    state = tmp_path / "state"

    def night(new: Path, date: str):
        rep = Representer(_cfg(state, new, date).embed, cache_dir=state / "cache", encoder=encoder)
        return run_nightly(_cfg(state, new, date), representer=rep)

    r1 = night(day1, "2026-01-01")
    p1 = r1.promotion
    assert r1.report["held_out"]["queries"] == 150 and r1.report["held_out"]["fresh_queries"] == 300
    ev1 = p1["evidence"]
    assert ev1["method"].startswith("doubly robust") and ev1["estimator"] == "dr"  # observational: one prompt a query
    assert ev1["against"]["name"] == "logging policy (as logged)" and ev1["held_out_queries"] == 150
    for row in ev1["challengers"].values():
        assert row["overlap"]["ess"] > 0 and row["overlap"]["off_support"] is not None
    promoted1 = p1["status"] == "promoted"
    assert promoted1 == (state / "live.json").is_file()
    if promoted1:  # a measured win: the lower bound of the difference is above the margin, and live.json says so
        live1 = json.loads((state / "live.json").read_text())
        assert live1["evidence"]["difference"]["ci_low"] > 0 and live1["run"] == "runs/2026-01-01"
    # every night's bundle serves (policy.json), whatever went live
    run1 = state / "runs" / "2026-01-01"
    assert PolicyState.load(run1 / "model").static_id in ("ToT", "gpt4_9", "Decomp")
    assert Policy.load(run1, warn=False).static_prompt_id in ("ToT", "gpt4_9", "Decomp")

    r2 = night(day2, "2026-01-02")
    p2 = r2.promotion
    assert p2["status"] == "promoted", p2["reason"]
    live2 = json.loads((state / "live.json").read_text())
    ev2 = live2["evidence"]
    assert live2["kind"] == "static" and live2["id"] == "plain" and live2["run"] == "runs/2026-01-02"
    assert ev2["estimator"] == "held_out" and ev2["evidence"].startswith("measured")  # a grid: measured values
    assert ev2["held_out_queries"] == 75 and ev2["rows"] > 75
    assert ev2["against"]["name"].startswith("live static prompt" if promoted1 else "logging policy")
    d = ev2["difference"]
    assert d["ci_low"] > 0 and d["level"] >= 0.95 and d["n"] == 75

    # the state folder serves the live prompt: Policy.load and `cpo assign --model STATE`
    policy = Policy.load(state)
    assert policy.live["run"] == "runs/2026-01-02" and policy.static_prompt_id == "plain"
    queries = new_queries(tmp_path)
    out = tmp_path / "assignment.parquet"
    capsys.readouterr()
    assert main(["assign", "--model", str(state), "--queries", str(queries), "--out", str(out),
                 "--set", "embed.device=cpu", "--set", f"embed.cache_dir={state / 'cache'}"]) == 0
    import pyarrow.parquet as pq

    got = pq.read_table(out)
    assert got.num_rows == 20 and set(got.column("recommended_prompt_id").to_pylist()) == {"plain"}
    assert json.loads(got.schema.metadata[b"cpo_engine.policy"])["live"]["id"] == "plain"

    # a static live record serves its prompt to every query, whatever the run's own policy would choose: one the run
    # logged (Decomp, not its incumbent), and one it never logged (an LLM-verified searched prompt: embedded)
    from cpo_engine.embedding.config import EmbedConfig
    from cpo_engine.policy.config import PolicyConfig

    own = Policy.load(state / "runs" / "2026-01-02", warn=False)
    embed = EmbedConfig(device="cpu", cache_dir=str(state / "cache"))
    texts = dict(zip(own.state.prompt_ids, own.state.prompt_texts))
    for pid, text in (("Decomp", texts["Decomp"]), ("searched_1", "Answer with the number only.")):
        (state / "live.json").write_text(json.dumps({"kind": "static", "id": pid, "text": text,
                                                      "run": "runs/2026-01-02"}))
        served = Policy.load(state, PolicyConfig(fallback=False), embed=embed, warn=False)  # no fallback: only live.json
        t = served.assign(["What is 7 plus 5?", "A box holds 12 eggs. How many in 3 boxes?"])
        assert set(t.column("recommended_prompt_id").to_pylist()) == {pid}
        assert set(t.column("recommended_prompt_text").to_pylist()) == {text}


def test_a_state_with_nothing_live_says_what_to_serve_instead(tmp_path):
    from cpo_engine import Policy

    (tmp_path / "runs" / "2026-01-01").mkdir(parents=True)
    (tmp_path / "current.json").write_text(json.dumps({"date": "2026-01-01", "run": "runs/2026-01-01"}))
    with pytest.raises(ConfigError, match="nothing is live yet") as exc:
        Policy.load(tmp_path)
    assert f"--model {tmp_path / 'runs/2026-01-01'}" in str(exc.value)
    (tmp_path / "live.json").write_text(json.dumps({"kind": "static", "id": "p", "text": "t", "run": "runs/gone"}))
    with pytest.raises(DataError, match="holds no model bundle") as exc:
        Policy.load(tmp_path)
    assert "live.json" in str(exc.value)
    (tmp_path / "live.json").write_text(json.dumps({"kind": "static", "run": "runs/2026-01-01"}))
    with pytest.raises(DataError, match="needs the prompt's"):
        Policy.load(tmp_path)


def _values(diff_per_query: np.ndarray, base: float = 0.4):
    """Measured values of a static challenger (prompt 1) and the live prompt (prompt 0) on a known grid."""
    from cpo_engine.causal.policy_values import measured_policy_values

    n = len(diff_per_query)
    Y = np.column_stack([np.full(n, base), base + diff_per_query])
    return measured_policy_values(Y, {"challenger": 1, "live": 0}, Y.mean(1), "live")


@pytest.mark.parametrize("shift, promoted", [(0.10, True), (0.02, False), (-0.10, False)])
def test_promotion_needs_the_lower_bound_of_the_difference_above_the_margin(tmp_path, shift, promoted):
    """Per-query differences with mean ``shift`` and sd 0.15 on 40 queries: +0.10 has a lower bound well above 0;
    +0.02 is positive but its interval covers 0 (kept); -0.10 is worse (kept)."""
    from cpo_engine.settings import NightlyConfig
    from cpo_engine.workflows.nightly_evidence import decide

    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.15, 40)
    values = _values(shift + noise - noise.mean())
    rec = {"kind": "static", "id": "p1", "text": "Better."}
    out = decide(values, {"challenger": (1, rec)}, "live", np.arange(40), NightlyConfig(), tmp_path,
                 tmp_path / "runs" / "d", "d")
    assert (out["status"] == "promoted") == promoted, out["reason"]
    d = out["evidence"]["challengers"]["challenger"]["difference"]
    assert abs(d["diff"] - shift) < 1e-9 and (d["ci_low"] > 0) == promoted
    if promoted:
        assert out["new_live"]["evidence"]["against"]["name"] == "live" and out["new_live"]["id"] == "p1"
    else:
        assert out["new_live"] is None and "not > margin" in out["reason"]


def test_the_kuberay_manifests_run_the_nightly_entrypoint_with_valid_flags():
    """examples/kuberay: the RayJob's entrypoint is `python -m jobs.nightly` with flags `cpo nightly` accepts (the
    shell's $(date) filled in), and the CronJob mounts the ConfigMap key it runs `kubectl create -f` on."""
    import argparse
    import shlex

    import yaml

    from cpo_engine.commands import config_from_args
    from cpo_engine.commands.nightly import register
    from cpo_engine.settings import NightlyConfig

    root = Path(__file__).resolve().parents[1] / "examples" / "kuberay"
    job = yaml.safe_load((root / "nightly-rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob" and job["spec"]["shutdownAfterJobFinishes"]
    argv = shlex.split(job["spec"]["entrypoint"].replace("$(date -u +%F)", "2026-01-02"))
    assert argv[:3] == ["python", "-m", "jobs.nightly"]
    args = register(argparse.ArgumentParser().add_subparsers()).parse_args(argv[3:])
    cfg = config_from_args(args, NightlyConfig)
    assert cfg.state == "/mnt/shared/nightly" and cfg.new == "/mnt/shared/logs/2026-01-02.parquet"
    assert cfg.embed.cache_dir == "/mnt/shared/cpo_cache"
    mounts = {v["mountPath"] for c in job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"]
              for v in c["volumeMounts"]}
    assert "/mnt/shared" in mounts
    docs = {d["kind"]: d for d in yaml.safe_load_all((root / "nightly-cronjob.yaml").read_text())}
    pod = docs["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"][-1] == "/manifests/rayjob.yaml"
    assert docs["CronJob"]["spec"]["concurrencyPolicy"] == "Forbid"
    assert docs["Role"]["rules"][0]["resources"] == ["rayjobs"] and "create" in docs["Role"]["rules"][0]["verbs"]


@pytest.mark.slow
@pytest.mark.timeout(500)
def test_a_night_searches_only_when_an_llm_can_verify_and_its_worked_examples_skip_held_out_queries(tmp_path, encoder):
    """'auto' (the default proposer) does not search without an LLM to verify; a proposer that reads the logs
    (worked examples) sees only the rows of queries not held out for tonight's promotion."""
    import pyarrow.parquet as pq

    from cpo_engine.search.config import BeamConfig, ProposerConfig
    from cpo_engine.settings import NightlyConfig
    from cpo_engine.workflows.common import Representer
    from cpo_engine.workflows.nightly import run_nightly
    from cpo_engine.workflows.nightly_evidence import choose_held_out

    assert NightlyConfig().proposer.kind == "auto"
    day1, _ = write_two_days(tmp_path / "logs", n1=160)
    cache = tmp_path / "cache"

    def night(state: Path, proposer: ProposerConfig):
        cfg = _cfg(state, day1, "2026-01-01")
        cfg.proposer, cfg.beam = proposer, BeamConfig(rounds=1, beam_width=4, children_per_beam=6, top_k=3)
        return cfg, run_nightly(cfg, representer=Representer(cfg.embed, cache_dir=cache, encoder=encoder))

    _, auto = night(tmp_path / "auto", NightlyConfig().proposer)
    assert auto.promotion["search"] == {"proposer": "none"}
    assert not (tmp_path / "auto" / "runs" / "2026-01-01" / "candidates.parquet").exists()

    cfg, ex = night(tmp_path / "examples", ProposerConfig(kind="examples", options={"k": 2}))
    assert ex.promotion["search"]["proposer"] == "examples" and ex.promotion["search"]["candidates"] > 0
    logs = pq.read_table(day1)
    held = choose_held_out(logs, logs, "2026-01-01", cfg).ids
    assert len(held) == 80
    text_of = dict(zip(map(str, logs.column("query_id").to_pylist()), logs.column("query_text").to_pylist()))
    held_texts = {text_of[q] for q in held}
    from cpo_engine.generation.templating import split_demos

    shown = [split_demos(t)[1] for t in pq.read_table(tmp_path / "examples" / "runs" / "2026-01-01" /
                                                      "candidates.parquet").column("text").to_pylist()]
    assert any(shown), "no candidate holds a worked example"
    for demos in shown:
        for question, _ in demos:
            assert question in text_of.values() and question not in held_texts, question


def test_the_night_embeds_through_the_cache_the_user_set_else_the_states_own(tmp_path):
    """`--set embed.cache_dir=...` is honoured by `cpo nightly` (the cron recipe sets it); unset, the cache is the
    state's cache/ (on the store itself for an s3:// state, so a fresh machine reuses earlier nights' vectors)."""
    from cpo_engine.settings import NightlyConfig
    from cpo_engine.workflows.nightly import night_cache

    def cache(state: str, **embed):
        cfg = NightlyConfig(state=state)
        for k, v in embed.items():
            setattr(cfg.embed, k, v)
        return night_cache(cfg, tmp_path / "mirror")

    assert cache(str(tmp_path / "state")) == tmp_path / "mirror" / "cache"
    assert cache("s3://bucket/nightly/") == "s3://bucket/nightly/cache"
    assert cache(str(tmp_path / "state"), cache_dir="/mnt/shared/cpo_cache") == "/mnt/shared/cpo_cache"
    assert cache("s3://bucket/nightly", cache_dir="s3://bucket/cpo_cache") == "s3://bucket/cpo_cache"
    assert cache(str(tmp_path / "state"), cache_dir=None) is None
