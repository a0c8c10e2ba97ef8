"""Run folders and the embedding cache under concurrent writers and reuse: a second writer of a run folder
is refused, a second writer of the cache waits and then embeds only what is missing, a kill -9 never
leaves a stale lock, and reusing --out after a failed or killed run never leaves a folder mixing two runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cpo_engine.cli import main
from cpo_engine.edits.simulate import simulate_grid
from cpo_engine.exceptions import BusyError, ConfigError
from cpo_engine.utils import FolderLock, lock_holder

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(300)


def _hold(folder: Path, seconds: float = 60.0) -> subprocess.Popen:
    """Another process that takes ``folder``'s lock and keeps it; returns once it holds it."""
    code = (f"import sys, time; from cpo_engine.utils import FolderLock; FolderLock({str(folder)!r}, 'x').acquire(); "
            f"print('held', flush=True); time.sleep({seconds})")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_and_kill_9_frees_the_lock(tmp_path):
    holder = _hold(tmp_path / "run")
    try:
        with pytest.raises(BusyError, match=rf"(?s)in use by another cpo process \(pid {holder.pid} .*fix: wait"):
            FolderLock(tmp_path / "run", "run folder").acquire()
        assert lock_holder(tmp_path / "run").startswith(f"pid {holder.pid} ")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with FolderLock(tmp_path / "run", "run folder"):  # the kernel dropped the dead holder's lock
        assert lock_holder(tmp_path / "run") is None  # our own lock does not count as busy


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("grid") / "grid.parquet"
    pq.write_table(simulate_grid({"math": {"step_by_step": 0.1, "persona": 0.0}}, n_queries=30, seed=0), path)
    return path


def _fit(grid: Path, out: Path, *extra: str) -> int:
    return main(["fit", "--data", str(grid), "--out", str(out), "--cv", "2", "--set", "embed.device=cpu",
                 "--set", f"embed.cache_dir={out.parent / 'cache'}", "--set", "pca.query_components=4", *extra])


def test_two_cpo_fits_on_one_out_folder(grid, tmp_path, capsys):
    holder = _hold(tmp_path / "fit")
    try:
        assert _fit(grid, tmp_path / "fit") == 2
        err = capsys.readouterr().err
        assert f"pid {holder.pid}" in err and "pass another --out" in err and "Traceback" not in err
    finally:
        holder.kill()
        holder.wait()
    assert not (tmp_path / "fit" / "manifest.json").exists()  # the refused run wrote nothing


def test_a_bundle_being_written_is_not_loaded(grid, tmp_path):
    from cpo_engine.policy.bundle import ModelBundle

    assert _fit(grid, tmp_path / "fit") == 0
    holder = _hold(tmp_path / "fit")
    try:
        with pytest.raises(BusyError, match="being written by another cpo process"):
            ModelBundle.load(tmp_path / "fit")
    finally:
        holder.kill()
        holder.wait()
    assert ModelBundle.load(tmp_path / "fit").model is not None


def test_a_rerun_that_fails_before_writing_keeps_the_earlier_run(grid, tmp_path, capsys):
    out = tmp_path / "fit"
    assert _fit(grid, out) == 0
    first = (out / "manifest.json").read_text()
    model = (out / "model" / "model.json").read_text()
    assert _fit(grid, out, "--set", "data.tasks=[no_such_task]") == 2  # fails reading the data
    assert "no_such_task" in capsys.readouterr().err
    assert (out / "manifest.json").read_text() == first and (out / "model" / "model.json").read_text() == model
    assert not (out / ".cpo-previous").exists()


def test_reusing_out_after_a_failed_run_never_mixes_two_runs(grid, tmp_path, capsys, monkeypatch):
    """An earlier run's search outputs must not survive next to a later run that failed after writing."""
    import cpo_engine.workflows.run as run_module
    from cpo_engine.exceptions import DataError

    out = tmp_path / "run"
    for name in ("search", "plots"):
        (out / name).mkdir(parents=True)
        (out / name / "old.bin").write_bytes(b"earlier run")
    (out / "report.html").write_text("earlier run")
    (out / "manifest.json").write_text(json.dumps({"status": "ok", "config": {}, "started_at": "t0",
                                                   "outputs": {"trace": "search/search_trace.json"}}))

    def fails(*args, **kwargs):
        raise DataError("the fit failed", fix="none")

    monkeypatch.setattr(run_module, "fit_models", fails)
    assert main(["run", "--data", str(grid), "--out", str(out), "--set", "embed.device=cpu", "--set",
                 f"embed.cache_dir={tmp_path / 'cache'}", "--set", "pca.query_components=4"]) == 2
    capsys.readouterr()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "the fit failed" in manifest["error"]
    assert manifest["replaces"] == {"started_at": "t0", "status": "ok"}
    assert sorted(p.name for p in out.iterdir()) == [".cpo.lock", "features", "manifest.json", "summary.json"]


def test_a_killed_run_is_recorded_as_interrupted_and_cleared(tmp_path):
    from dataclasses import dataclass

    from cpo_engine.workflows.common import open_run

    @dataclass
    class Cfg:
        out: str

    out = tmp_path / "run"
    (out / "search").mkdir(parents=True)
    (out / "search" / "candidates.parquet").write_bytes(b"old")
    (out / "plots").mkdir()
    (out / ".summary.json.ab12.tmp").write_text("half")  # a write cut by kill -9
    (out / "notes.txt").write_text("mine")  # not the engine's: kept
    (out / "manifest.json").write_text(json.dumps({"status": "running", "config": {}, "started_at": "t0",
                                                   "outputs": {"trace": "search/search_trace.json"}}))
    (out / ".cpo-previous").mkdir()  # left by a run killed while it held an earlier run's outputs
    with open_run(out, Cfg(str(out)), "run", ("features", "search", "plots", "summary.json")) as manifest:
        assert manifest.data["replaces"] == {"started_at": "t0", "status": "interrupted"}
        assert not (out / "search").exists() and not (out / "plots").exists()
    assert sorted(p.name for p in out.iterdir()) == [".cpo.lock", "manifest.json", "notes.txt"]
    assert json.loads((out / "manifest.json").read_text())["status"] == "ok"


def test_a_folder_that_is_not_a_run_folder_is_never_emptied(tmp_path):
    from dataclasses import dataclass

    from cpo_engine.workflows.common import open_run

    @dataclass
    class Cfg:
        out: str

    (tmp_path / "mine" / "model").mkdir(parents=True)
    with pytest.raises(ConfigError, match="does not look like a cpo run folder"), \
            open_run(tmp_path / "mine", Cfg("x"), "fit", ("model",)):
        pass
    (tmp_path / "gen").mkdir()
    (tmp_path / "gen" / "manifest.json").write_text(json.dumps({"format": "cpo-generation/1", "shards": []}))
    with pytest.raises(ConfigError, match="cpo-generation/1"), open_run(tmp_path / "gen", Cfg("x"), "fit", ("model",)):
        pass
    assert (tmp_path / "mine" / "model").is_dir() and (tmp_path / "gen" / "manifest.json").exists()
    (tmp_path / "notes").mkdir()  # a folder of unrelated files: refused, not mixed into, and no lock left behind
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(ConfigError, match="already holds todo.txt but no cpo manifest.json"), \
            open_run(tmp_path / "notes", Cfg("x"), "fit", ("model",)):
        pass
    assert sorted(p.name for p in (tmp_path / "notes").iterdir()) == ["todo.txt"]


_EMBED = """
import json, sys, time
from cpo_engine.embedding import EmbeddingCache, make_encoder
texts = [f"Question {i}: what is {i} times {i + 3}?" for i in range(120)]
cache = EmbeddingCache(sys.argv[1], shard_rows=10)
enc = make_encoder(device="cpu", num_threads=1)
enc.dim  # load the weights before the race starts
print("ready", flush=True)
sys.stdin.readline()
cache.embed(enc, texts)
print(json.dumps({"hits": cache.stats.hits, "misses": cache.stats.misses}), flush=True)
"""


def test_two_processes_embedding_into_one_cache_never_interleave(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", _EMBED, str(tmp_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
    for p in procs:  # start both at once
        p.stdin.write("go\n")
        p.stdin.flush()
    stats = [json.loads(p.stdout.readline()) for p in procs]
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errs
    # one process embedded everything; the other waited for its lock, then found every text cached
    assert sorted(s["misses"] for s in stats) == [0, 120] and sum(s["hits"] for s in stats) == 120
    assert any("waiting for another cpo process" in e for e in errs)
    keys = [k for f in tmp_path.rglob("shard-*.parquet") for k in pq.read_table(f, columns=["key"])["key"].to_pylist()]
    assert len(keys) == len(set(keys)) == 120
