"""A real Ray job: start a local Ray head bound to 127.0.0.1 (with the dashboard's job server), submit
`python -m jobs.generate` with `ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml`,
and check the job's output. The generation inside the job runs the Ray Data pipeline on the cluster.
The head advertises 4 logical CPUs on this 2-core machine and every stage takes a fraction of one,
so the engine actor can never starve the read and templating tasks."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cpo_engine.generation import read_generated

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head in its own process group (stopped by group id: no `ray stop`, which would stop
    every Ray on the machine)."""
    if not (BIN / "ray").exists():
        pytest.skip("the ray CLI is not installed (pip install 'ray[default]')")
    ports = {k: _port() for k in ("gcs", "dash", "client", "agent", "agent_grpc", "metrics", "env")}
    temp = Path(f"/tmp/ray_cpo_{ports['gcs']}")
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", RAY_AUTH_MODE="disabled", OMP_NUM_THREADS="1")
    cmd = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
           "--port", str(ports["gcs"]), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(ports["dash"]),
           "--include-dashboard", "true", "--ray-client-server-port", str(ports["client"]),
           "--dashboard-agent-listen-port", str(ports["agent"]),
           "--dashboard-agent-grpc-port", str(ports["agent_grpc"]),
           "--metrics-export-port", str(ports["metrics"]), "--runtime-env-agent-port", str(ports["env"]),
           "--num-cpus", "4", "--object-store-memory", str(512 * 1024**2), "--disable-usage-stats",
           "--temp-dir", str(temp)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"http://127.0.0.1:{ports['dash']}"
    try:
        _wait(f"{address}/api/version", 120, proc)
        yield address, env
    finally:
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue


def _wait(url: str, timeout_s: float, proc: subprocess.Popen) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(f"the Ray dashboard did not answer at {url}")


@pytest.mark.timeout(400)
def test_generate_job_runs_on_a_local_ray_head(ray_head, tmp_path):
    address, env = ray_head
    rows = [{"query_id": f"q{q}", "query_text": f"What is {q} + 1?", "prompt_id": f"p{p}",
             "prompt_text": f"Prompt {p}.", "gold_answer": float(q + 1), "score": float((q + p) % 2),
             "raw_answer": f"It is {q + 1 - (q + p) % 2}."} for q in range(6) for p in range(3)]
    log = tmp_path / "log.parquet"
    pq.write_table(pa.Table.from_pylist(rows), log)
    out = tmp_path / "out"
    cmd = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", ".",
           "--runtime-env", "jobs/runtime_env.yaml", "--", "python", "-m", "jobs.generate",
           "--backend", "replay", "--replay", str(log), "--queries", str(log), "--out", str(out),
           "--executor", "ray", "--shard-size", "6", "--set", "ray.batch_size=6"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=380)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "succeeded" in proc.stdout + proc.stderr
    table = read_generated(out, verify=True)
    assert table.num_rows == 18 and table.column("error").null_count == 18
    got = {(r["query_id"], r["prompt_id"]): r["score"] for r in table.to_pylist()}
    assert got == {(r["query_id"], r["prompt_id"]): r["score"] for r in rows}
    assert json.loads((out / "manifest.json").read_text())["settings"]["executor"] == "ray"


@pytest.mark.timeout(200)
def test_failing_job_exits_1_with_a_clear_message(ray_head, tmp_path):
    address, env = ray_head
    cmd = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", ".",
           "--runtime-env", "jobs/runtime_env.yaml", "--", "python", "-m", "jobs.generate",
           "--queries", str(tmp_path / "missing.parquet"), "--out", str(tmp_path / "o")]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode != 0
    assert "missing.parquet" in proc.stdout + proc.stderr and "does not exist" in proc.stdout + proc.stderr
