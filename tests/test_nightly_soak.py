"""Nightly soak (issue 21): 14 simulated nights of `cpo nightly` on one state folder, each with new logs
and one random fault, drawn with a fixed seed so CI sees the same schedule every run.

Everything is real except the faults, which are injected on purpose: the embeddings are the packaged
MiniLM, the fit is the causal model of every night, and the LLM that verifies and promotes is a real
OpenAI-compatible HTTP server on 127.0.0.1 (a ``ThreadingHTTPServer`` in this process that answers each
(prompt, query) deterministically). The server's faults are deliberate: it is shut down for a night
(connection refused) or answers every call with HTTP 200 and an HTML login page (not JSON). The other
faults: a state file (``current.json``, ``live.json`` or a stored day of triplets) truncated or
overwritten with junk; ``kill -9`` of the `cpo nightly` subprocess after a random delay; schema drift in
the new logs (an extra column, a column of another type, a missing optional column); or no fault.

After every night: it exited 0/2/3/4 (never a traceback) and either committed (current.json names its
run, its day of triplets is stored, its report is in its run folder) or rolled back (current.json,
live.json and the stored days exactly as before it, nothing stored for its date); the live prompt is
readable and was written by a committed night; every committed night's stored days and run folder are
byte-identical to when it committed; no temp file is left once a night exits on its own. A damaged state
file ends in exit 2 with a message naming it; the "user" then restores it and reruns the night, which
commits. An LLM outage or garbage night is rerun once the server is back. A killed night is either
resumed (rerun of the same date) or left behind: then the next night must not count anything it wrote.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.http_helpers import reply

pytestmark = pytest.mark.slow

SEED = 20260221
NIGHTS = 14
N_POOL, N_QUERIES = 48, 24
FAULTS = ("none", "llm_down", "llm_garbage", "corrupt_current", "corrupt_live", "corrupt_day", "kill",
          "drift_extra_column", "drift_type", "drift_missing_optional")
ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------- the LLM server (real HTTP)


class _LLM(BaseHTTPRequestHandler):
    """/v1/chat/completions: 'The answer is 0.' (correct) for a share of (prompt, query) pairs that grows
    with the prompt's index, else a wrong number; ``server.garbage``: HTTP 200 with an HTML page."""

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.calls += 1
        if self.server.garbage:
            reply(self, b"<html><body>Please log in to the proxy</body></html>", "text/html")
            return
        text = json.dumps(body.get("messages") or body.get("prompt"))
        h = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        answer = "The answer is 0." if h < 0.5 else "The answer is 7."
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
                           "usage": {"prompt_tokens": 5, "completion_tokens": 4}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class LLMServer:
    """The server on a fixed port, which can be stopped (connection refused) and started again."""

    def __init__(self) -> None:
        self.port, self.srv, self.garbage = 0, None, False
        self.start()

    def start(self) -> None:
        self.srv = ThreadingHTTPServer(("127.0.0.1", self.port), _LLM)
        self.srv.garbage, self.srv.calls, self.srv.daemon_threads = self.garbage, 0, True
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.srv.shutdown()
        self.srv.server_close()
        self.srv = None

    def set_garbage(self, on: bool) -> None:
        self.garbage = self.srv.garbage = on

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


# ------------------------------------------------------------------------------------- the logs


@pytest.fixture(scope="module")
def texts():
    from cpo_engine.data import load_example

    t = load_example()
    q = list(dict.fromkeys(zip(t["query_id"].to_pylist(), t["query_text"].to_pylist())))[:N_POOL]
    p = list(dict.fromkeys(zip(t["prompt_id"].to_pylist(), t["prompt_text"].to_pylist())))
    return q, p


def logs(texts, rng: np.random.Generator, path: Path, drift: str | None = None) -> Path:
    """A night's logs (the table of the nightly tests: P(correct) = sigmoid(a_q + b_p), 2 samples per cell)
    on N_QUERIES of the pool's queries, with ``drift`` applied to the schema."""
    queries, prompts = texts
    a = np.random.default_rng(0).normal(0, 1, len(queries))
    b = np.linspace(-2.0, 2.0, len(prompts))
    rows = []
    for i in sorted(rng.choice(len(queries), N_QUERIES, replace=False)):
        qid, qt = queries[i]
        for j, (pid, pt) in enumerate(prompts):
            prob = 1 / (1 + np.exp(-(a[i] + b[j])))
            for s in range(2):
                rows.append({"query_id": qid, "query_text": qt, "prompt_id": pid, "prompt_text": pt,
                             "score": float(rng.random() < prob), "sample": s, "task": "mawps",
                             "gold_answer": "0"})
    table = pa.Table.from_pylist(rows)
    if drift == "drift_extra_column":
        table = table.append_column("latency_ms", pa.array(rng.uniform(10, 900, table.num_rows)))
    elif drift == "drift_type":  # one column stored as another type than the previous nights'
        col = ["sample", "gold_answer", "score"][int(rng.integers(3))]
        values = table.column(col).to_pylist()
        new = (pa.array([str(v) for v in values]) if col != "gold_answer" else pa.array([int(v) for v in values]))
        table = table.set_column(table.schema.get_field_index(col), col, new)
    elif drift == "drift_missing_optional":
        table = table.drop_columns([["sample", "task"][int(rng.integers(2))]])
    pq.write_table(table, path)
    return path


# ------------------------------------------------------------------------------------- the nights


def argv(state: Path, new: Path, date: str, url: str) -> list[str]:
    return ["nightly", "--state", str(state), "--new", str(new), "--date", date, "--window-days", "3", "--cv", "3",
            "--proposer", "none", "--verify-base-url", url, "--verify-llm-model", "m", "--verify-max-queries", "8",
            "--min-kendall-tau", "-1", "--max-changed-share", "1", "--max-uplift-change", "10",
            "--set", "pca.query_components=4", "--set", "pca.prompt_components=4", "--set", "embed.device=cpu",
            "--set", "generation.backend.openai.max_retries=1", "--set", "generation.backend.openai.backoff_s=0.01",
            "--set", "generation.backend.openai.timeout_s=10", "--set", "verify.seeds=all"]


def run_in_process(args: list[str], capsys) -> tuple[int, str]:
    from cpo_engine.cli import main

    code = main(args)
    out, err = capsys.readouterr()
    return code, out + err


def run_killed(args: list[str], delay: float) -> tuple[int, str]:
    """`cpo nightly` as a subprocess, SIGKILLed after ``delay`` seconds unless it ended before."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1",
                        "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "cpo_engine.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
    return proc.returncode, out


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(folder: Path) -> dict[str, str]:
    return {str(f.relative_to(folder)): sha(f) for f in sorted(folder.rglob("*"))
            if f.is_file() and f.name != ".cpo.lock"}


def state_files(state: Path) -> dict[str, str | None]:
    """What decides the next night: current.json, live.json and every stored day (bytes' hashes)."""
    out = {name: (sha(state / name) if (state / name).is_file() else None) for name in ("current.json", "live.json")}
    for f in sorted((state / "triplets").rglob("*.parquet")) if (state / "triplets").is_dir() else []:
        out[str(f.relative_to(state))] = sha(f)
    return out


def temp_files(state: Path, runs: set[str]) -> list[str]:
    """Temp files where they would count: the state folder, the stored days, the committed runs (a killed
    night's own run folder, never committed, may keep its)."""
    found = [*state.glob("*.tmp"), *(state / "triplets").rglob("*.tmp")]
    found += [f for run in runs for f in (state / run).rglob("*.tmp")]
    return [str(f.relative_to(state)) for f in found]


def corrupt(path: Path, rng: np.random.Generator) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if rng.random() < 0.5 else b"\x00junk\xff" + data[::7][:40])


class Soak:
    """The state folder, what each committed night left (hashes), and the invariants checked after each night."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.committed: dict[str, dict[str, str]] = {}  # date -> sha256 of its stored days and run folder files
        self.runs: set[str] = set()
        self.kills = 0

    def snapshot_commit(self, date: str) -> None:
        cur = json.loads((self.state / "current.json").read_text())
        assert cur["date"] == date
        run = self.state / cur["run"]
        report = json.loads((run / "report.json").read_text())
        assert report["model_status"] == "updated" and report["live_run"] == cur["run"]
        assert (run / "model" / "bundle.json").is_file() and (run / "assignment.parquet").is_file()
        day = self.state / "triplets" / f"{date}.parquet"
        verified = self.state / "triplets" / "verified" / f"{date}.parquet"
        assert pq.read_table(day).column("nightly_date").to_pylist() == [date] * pq.read_metadata(day).num_rows
        assert verified.is_file(), "a verified night stores the LLM's triplets"
        self.committed[date] = {"day": sha(day), "verified": sha(verified)} | {
            f"{cur['run']}/{k}": v for k, v in tree(run).items()}
        self.runs.add(cur["run"])

    def check(self, date: str, before: dict[str, str | None], outcome: str) -> None:
        state = self.state
        # every committed night's data: present and byte-identical
        for d, hashes in self.committed.items():
            for key, h in hashes.items():
                f = (state / "triplets" / f"{d}.parquet" if key == "day" else
                     state / "triplets" / "verified" / f"{d}.parquet" if key == "verified" else state / key)
                assert f.is_file() and sha(f) == h, f"committed night {d}: {key} changed or vanished"
        # the live prompt: readable, and written by a committed night
        if (state / "live.json").is_file() and outcome != "corrupted":
            live = json.loads((state / "live.json").read_text())
            assert live["run"] in self.runs, f"live.json names {live['run']}, which never committed"
            assert live.get("text") or live.get("arms")
        if (state / "current.json").is_file() and outcome != "corrupted":
            cur = json.loads((state / "current.json").read_text())
            assert cur["run"] in self.runs and (state / cur["run"] / "report.json").is_file()
        if outcome == "rolled_back":  # nothing it wrote counts: the state is exactly as before
            assert state_files(state) == before, f"night {date} rolled back but changed the state"
            assert not (state / "triplets" / f"{date}.parquet").exists() or date in self.committed


@pytest.mark.timeout(600)
def test_fourteen_nights_with_random_faults_never_lose_a_night(texts, tmp_path, capsys):
    rng = np.random.default_rng(SEED)
    # every fault at least once, kill -9 three times (its moment matters most), the rest drawn at random
    extra = ["kill", "kill"] + list(rng.choice(FAULTS, NIGHTS - len(FAULTS) - 2))
    schedule = ["none"] + list(rng.permutation(list(FAULTS[1:]) + extra))
    state, llm = tmp_path / "state", LLMServer()
    soak = Soak(state)
    seen: dict[str, str] = {}
    started = time.monotonic()
    try:
        for night, fault in enumerate(schedule):
            date = f"2026-02-{night + 1:02d}"
            clean = logs(texts, np.random.default_rng([SEED, night]), tmp_path / f"logs-{date}.parquet")
            args = argv(state, clean, date, llm.url)
            before = state_files(state)
            outcome = run_night(soak, fault, date, args, clean, before, texts, rng, llm, capsys, tmp_path)
            seen[date] = f"{fault}: {outcome}"
            if outcome != "left_behind":  # a night that ended on its own also cleaned what a killed one left
                assert not temp_files(state, soak.runs), f"{date} ({fault}) left temp files: {temp_files(state, soak.runs)}"
    finally:
        if llm.srv is not None:
            llm.stop()
    elapsed = time.monotonic() - started
    print(f"soak: {NIGHTS} nights in {elapsed:.0f} s: {seen}")
    assert set(schedule) == set(FAULTS)
    committed = sorted(soak.committed)
    stored = sorted(f.stem for f in (state / "triplets").glob("*.parquet"))
    assert stored == committed, "the store holds exactly the committed nights"
    assert len(committed) >= NIGHTS - schedule.count("kill")


def run_night(soak: Soak, fault: str, date: str, args: list[str], clean: Path, before: dict, texts,
              rng: np.random.Generator, llm: LLMServer, capsys, tmp_path: Path) -> str:
    """One night with its fault; returns how it ended (committed, committed after repair, left behind)."""
    state = soak.state

    def commit_clean(why: str) -> str:
        code, out = run_in_process(args, capsys)
        assert code == 0, f"{date}: the rerun after {why} failed ({code}):\n{out}"
        soak.snapshot_commit(date)
        soak.check(date, before, "committed")
        return f"committed after {why}"

    def rolled_back(code: int, out: str, why: str) -> None:
        assert code in (2, 4), f"{date} ({why}): exit {code}\n{out}"
        assert "Traceback" not in out, out
        soak.check(date, before, "rolled_back")

    if fault in ("none", "drift_extra_column", "drift_type", "drift_missing_optional"):
        new = clean if fault == "none" else logs(texts, np.random.default_rng([SEED, 99, len(soak.committed)]),
                                                   tmp_path / f"drift-{date}.parquet", drift=fault)
        code, out = run_in_process([str(new) if a == str(clean) else a for a in args], capsys)
        assert "Traceback" not in out and code in (0, 2), f"{date} ({fault}): exit {code}\n{out}"
        if code == 0:
            soak.snapshot_commit(date)
            soak.check(date, before, "committed")
            return "committed"
        assert str(new) in out and "fix" in out, out  # refused: the message names the logs and the fix
        rolled_back(code, out, fault)
        return commit_clean(f"refused drift ({out.strip().splitlines()[-1][:60]})")

    if fault in ("llm_down", "llm_garbage"):
        llm.stop() if fault == "llm_down" else llm.set_garbage(True)
        code, out = run_in_process(args, capsys)
        llm.start() if fault == "llm_down" else llm.set_garbage(False)
        rolled_back(code, out, fault)
        assert code == 2 and "LLM call" in out and "fix:" in out, out  # one message: what failed, what to do
        return commit_clean(fault)

    if fault.startswith("corrupt_"):
        candidates = {"corrupt_current": [state / "current.json"], "corrupt_live": [state / "live.json"],
                      "corrupt_day": sorted((state / "triplets").rglob("*.parquet"))}[fault]
        target = candidates[int(rng.integers(len(candidates)))]
        good = target.read_bytes()
        corrupt(target, rng)
        broken = state_files(state)
        code, out = run_in_process(args, capsys)
        assert code == 2 and "Traceback" not in out, f"{date} ({fault}): exit {code}\n{out}"
        assert str(target) in out and "fix" in out, f"the message must name {target}:\n{out}"
        assert state_files(state) == broken and not (state / "triplets" / f"{date}.parquet").exists()
        target.write_bytes(good)  # the user restores the file from a backup
        soak.check(date, before, "rolled_back")
        return commit_clean(f"{target.name} restored")

    assert fault == "kill"
    code, out = run_killed(args, delay=float(rng.uniform(2.0, 12.0)))
    assert code in (0, -signal.SIGKILL), f"{date}: exit {code}\n{out}"
    if (state / "commit.json").is_file():  # killed while committing: the next night first completes the commit
        from cpo_engine.utils import FolderLock
        from cpo_engine.workflows.nightly import recover

        with FolderLock(state, "nightly state folder"):
            recover(state)
    cur = json.loads((state / "current.json").read_text()) if (state / "current.json").is_file() else {}
    if cur.get("date") == date:  # it committed before the signal
        soak.snapshot_commit(date)
        soak.check(date, before, "committed")
        return f"committed before the kill (exit {code})"
    soak.check(date, before, "rolled_back")
    soak.kills += 1
    if soak.kills % 2:  # every other killed night is rerun; the others are left behind for the next night
        return commit_clean(f"kill -9 (resumed, exit {code})")
    return "left_behind"


# ----------------------------------------------------------------------------- focused regressions


def _kill_at(script: str, args: list[str]) -> int:
    """`cpo nightly` in a subprocess that SIGKILLs itself where ``script`` (run first) says."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    code = (f"import os, signal, sys\nfrom pathlib import Path\n{script}\n"
            f"from cpo_engine.cli import main\nsys.exit(main({args!r}))")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, timeout=300).returncode


KILL_AT_COMMIT = """
import cpo_engine.workflows.nightly as n
write = n.atomic_write_json
def kill_first(path, obj):  # the commit point (current.json before commit.json existed)
    if Path(path).name in ("commit.json", "current.json"):
        os.kill(os.getpid(), signal.SIGKILL)
    return write(path, obj)
n.atomic_write_json = kill_first
"""

KILL_DURING_COMMIT = """
import cpo_engine.workflows.nightly as n
replace = os.replace
def kill_in_commit(src, dst):  # after the commit record, at the first move of a staged file
    if "staged" in Path(src).parts and "staged" not in Path(dst).parts:
        os.kill(os.getpid(), signal.SIGKILL)
    return replace(src, dst)
os.replace = kill_in_commit
"""


@pytest.mark.timeout(600)
def test_a_night_killed_at_its_commit_is_all_or_nothing(texts, tmp_path, capsys):
    """kill -9 just before current.json moved left live.json and triplets/<date>.parquet (and the verified
    day) written by a night that never committed: the next fit counted them and live.json named a run that
    was never current. Now a night killed before its commit record leaves nothing, and one killed after it
    is completed by the next night."""
    state, llm = tmp_path / "state", LLMServer()
    try:
        d1 = logs(texts, np.random.default_rng(1), tmp_path / "d1.parquet")
        assert _kill_at(KILL_AT_COMMIT, argv(state, d1, "2026-03-01", llm.url)) == -signal.SIGKILL
        assert not (state / "live.json").exists() and not (state / "current.json").exists()
        assert not list((state / "triplets").rglob("*.parquet")) if (state / "triplets").exists() else True

        assert _kill_at(KILL_DURING_COMMIT, argv(state, d1, "2026-03-01", llm.url)) == -signal.SIGKILL
        assert (state / "commit.json").is_file()
        d2 = logs(texts, np.random.default_rng(2), tmp_path / "d2.parquet")
        code, out = run_in_process(argv(state, d2, "2026-03-02", llm.url), capsys)
        assert code == 0, out
        report = json.loads((state / "runs" / "2026-03-02" / "report.json").read_text())
        assert report["comparison"]["previous_run"].endswith("runs/2026-03-01")  # completed before tonight
        assert report["dates"] == ["2026-03-01", "2026-03-02"] and not (state / "commit.json").exists()
        assert json.loads((state / "live.json").read_text())["run"] in ("runs/2026-03-01", "runs/2026-03-02")
        assert {f.name for f in (state / "triplets").glob("*.parquet")} == {"2026-03-01.parquet", "2026-03-02.parquet"}
        assert not list(state.rglob("staged/*.parquet"))
    finally:
        llm.stop()


def test_a_missing_run_named_by_current_json_is_named_with_the_fix(tmp_path, tiny_table, capsys):
    """Item 18: current.json naming a deleted run folder ended in a FileNotFoundError on one of its files
    (after the whole fit) without naming current.json."""
    from cpo_engine.cli import main

    state = tmp_path / "state"
    state.mkdir()
    (state / "current.json").write_text(json.dumps({"date": "2026-01-01", "run": "runs/2026-01-01"}))
    pq.write_table(tiny_table, tmp_path / "new.parquet")
    code = main(["nightly", "--state", str(state), "--new", str(tmp_path / "new.parquet"), "--date", "2026-01-02"])
    out, err = capsys.readouterr()
    assert code == 2 and "Traceback" not in out + err, out + err
    assert str(state / "current.json") in err and str(state / "runs" / "2026-01-01") in err, err
    assert "does not exist" in err and "fix: restore" in err and "delete current.json" in err
    assert not (state / "triplets").exists() and not (state / "runs").exists()


def test_a_corrupt_stored_day_is_named_when_the_new_logs_are_checked(tmp_path, tiny_table):
    """check_texts read the stored days with pyarrow directly: a junk day file was an ArrowInvalid traceback
    (exit 1, "this is a bug") instead of a message naming the file."""
    from cpo_engine.exceptions import DataError
    from cpo_engine.workflows.nightly import check_texts

    (tmp_path / "triplets").mkdir()
    (tmp_path / "triplets" / "2026-01-01.parquet").write_bytes(b"\x00junk, not parquet")
    with pytest.raises(DataError, match="cannot be read") as exc:
        check_texts(tmp_path, tiny_table, "2026-01-02", "new.parquet")
    assert str(tmp_path / "triplets" / "2026-01-01.parquet") in str(exc.value) and "fix" in str(exc.value)
