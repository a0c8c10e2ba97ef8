"""Nightly on Ray (issue 23): a local Ray head started by the test (dashboard + job server on 127.0.0.1), the
nightly entrypoint (`python -m jobs.nightly`) submitted through the Ray Jobs API (JobSubmissionClient, the API
behind `ray job submit` and KubeRay's RayJob) two nights in a row on real logs (tests/nightly_logs.py: day 1
observational, day 2 a grid of fresh queries where plain is clearly best), then `cpo assign --model STATE` serves
what went live. Every Ray call has a timeout; the jobs' drivers take half a logical CPU."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from tests.nightly_logs import new_queries, write_two_days
from tests.test_generation_ray_job import ray_head  # noqa: F401 (the module-scoped local Ray head fixture)

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _run_job(client, entrypoint: str, timeout_s: float) -> str:
    """Submit ``entrypoint`` as a Ray job with the repository as working dir; wait for it (stopped on timeout)."""
    from ray.job_submission import JobStatus

    env = yaml.safe_load((ROOT / "jobs" / "runtime_env.yaml").read_text()) | {"working_dir": str(ROOT)}
    job = client.submit_job(entrypoint=entrypoint, runtime_env=env, entrypoint_num_cpus=0.5)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.get_job_status(job)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            logs = client.get_job_logs(job)
            assert status == JobStatus.SUCCEEDED, logs[-4000:]
            return logs
        time.sleep(1)
    client.stop_job(job)
    pytest.fail(f"the Ray job {job} did not finish in {timeout_s} s:\n{client.get_job_logs(job)[-4000:]}")


@pytest.mark.timeout(420)
def test_two_nights_on_ray_jobs_promote_on_measured_evidence_and_assign_serves_the_state(ray_head, tmp_path,  # noqa: F811
                                                                                         capsys):
    import pyarrow.parquet as pq
    from ray.job_submission import JobSubmissionClient

    from cpo_engine.cli import main

    address, _ = ray_head
    client = JobSubmissionClient(address)
    day1, day2 = write_two_days(tmp_path / "logs")
    state = tmp_path / "state"
    for day, date in ((day1, "2026-01-01"), (day2, "2026-01-02")):
        logs = _run_job(client, f"python -m jobs.nightly --state {state} --new {day} --date {date} --cv 3 "
                                "--proposer none --set embed.device=cpu --set promote.holdout_share=0.5", 170)
        assert f"nightly {date}:" in logs and "live prompt/policy:" in logs
        report = json.loads((state / "runs" / date / "report.json").read_text())
        assert report["model_status"] == "updated" and report["held_out"]["skipped"] is None
        if date == "2026-01-01":
            night1 = report["promotion"]
            # goes live only on evidence: a doubly robust value on the held-out day-1 queries against the logs
            assert night1["evidence"]["estimator"] == "dr"
            assert (night1["status"] == "promoted") == (state / "live.json").is_file()
    night2 = report["promotion"]
    assert night2["status"] == "promoted", night2["reason"]
    live = json.loads((state / "live.json").read_text())
    assert live["id"] == "plain" and live["run"] == "runs/2026-01-02"
    assert live["evidence"]["difference"]["ci_low"] > 0 and live["evidence"]["estimator"] == "held_out"
    assert live["evidence"]["against"]["name"] == night2["evidence"]["against"]["name"]

    out = tmp_path / "assignment.parquet"
    capsys.readouterr()
    assert main(["assign", "--model", str(state), "--queries", str(new_queries(tmp_path)), "--out", str(out),
                 "--set", "embed.device=cpu", "--set", f"embed.cache_dir={state / 'cache'}"]) == 0
    got = pq.read_table(out)
    assert got.num_rows == 20 and set(got.column("recommended_prompt_id").to_pylist()) == {"plain"}
