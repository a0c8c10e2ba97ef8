"""The distributed path under a fault: `cpo generate --executor ray` on a local Ray, the engine actor
(the Ray Data actor pool stage that calls the LLM) killed with SIGKILL mid-generation. Ray Data restarts
the actor and retries its batch, or the run fails and the same command resumes it; either way the run
ends complete with every planned triplet exactly once (no lost and no duplicated row in the shards).

The LLM is the OpenAI-compatible test double of tests/test_generation.py, slowed so the kill lands mid-run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cpo_engine.generation import read_generated
from tests.test_generation import fake_server  # noqa: F401 (the OpenAI-compatible test double, a fixture)

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(600)]
N_QUERIES, N_PROMPTS = 12, 3


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])


def _descends_from(pid: int, root: int) -> bool:
    while pid > 1:
        if pid == root:
            return True
        pid = _parent(pid)
    return False


def _engine_actor_pids(driver: int) -> list[int]:
    """The engine stage's actor processes of *this* run: titled ray::MapWorker(MapBatches(EngineStage)) by Ray
    and descended from the run's driver (the local Ray it started), never another job's on the machine."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\x00", b" ").decode(errors="replace")
        except OSError:
            continue
        if "EngineStage" in cmd and "ray::" in cmd and _descends_from(int(d.name), driver):
            pids.append(int(d.name))
    return pids


def _generate(queries: Path, out: Path, url: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", RAY_DEFAULT_OBJECT_STORE_MEMORY_PROPORTION="0.02",
               RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "cpo_engine.cli", "generate", "--queries", str(queries), "--out", str(out),
           "--base-url", url, "--executor", "ray", "--shard-size", "2", "--set", "ray.num_cpus=4",
           "--set", "ray.batch_size=2", "--set", "ray.cpus_per_engine=0.5", "--set", "backend.openai.max_retries=0"]
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _committed(out: Path) -> int:
    try:
        return int(json.loads((out / "manifest.json").read_text())["rows"])
    except (OSError, ValueError, KeyError):
        return 0


def test_engine_actor_killed_mid_generation(tmp_path, fake_server):  # noqa: F811
    pytest.importorskip("ray")
    fake_server.script = [(200, 0.25)] * 1000  # every answer takes 0.25 s
    url = f"http://127.0.0.1:{fake_server.server_address[1]}/v1"
    rows = [{"query_id": f"q{q}", "query_text": f"What is {q} plus 10?", "gold_answer": float(q + 10),
             "prompt_id": f"p{p}", "prompt_text": f"Prompt {p}: think carefully."}
            for q in range(N_QUERIES) for p in range(N_PROMPTS)]
    queries = tmp_path / "queries.parquet"
    pq.write_table(pa.Table.from_pylist(rows), queries)
    out, planned = tmp_path / "run", N_QUERIES * N_PROMPTS

    proc = _generate(queries, out, url)
    killed, deadline = [], time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and not killed:
        pids = _engine_actor_pids(proc.pid)
        if pids and 4 <= _committed(out) < planned - 8:  # mid-run: some shards committed, most rows to go
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            killed = pids
        time.sleep(0.05)
    log, _ = proc.communicate(timeout=300)
    assert killed, f"the engine actor was never seen mid-run; the test would prove nothing:\n{log[-3000:]}"
    assert 0 < _committed(out) or proc.returncode == 0
    resumed = None
    if proc.returncode != 0:  # Ray gave up on the actor: the same command resumes the run
        resumed = _generate(queries, out, url)
        log2, _ = resumed.communicate(timeout=300)
        assert resumed.returncode == 0, log2[-3000:]

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["rows"] == planned, (manifest, log[-2000:])
    keys = []
    for f in sorted((out / "shards").glob("*.parquet")):
        t = pq.read_table(f, columns=["query_id", "prompt_id", "sample"])
        keys += list(zip(*(t.column(c).to_pylist() for c in t.column_names)))
    assert len(keys) == len(set(keys)) == planned  # no duplicated and no lost triplet
    t = read_generated(out, verify=True)
    assert t.column("error").null_count == planned and not np.isnan(t.column("score").to_numpy()).any()
    print(f"killed engine actor(s) {killed} after {len(keys)} planned rows; resumed: {resumed is not None}")
