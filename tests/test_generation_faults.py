"""Generation and the LLM proposer under faults: failed calls are counted and a run where every call failed
is an error (not "complete"); the replayed log is part of the run identity; credentials in --base-url never
reach a file; temp files of a kill are cleaned; a deleted shard is generated again and an edited one refused;
two writers of one run folder never interleave; a dead server makes the LLM proposer fail loudly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cpo_engine.cli import main
from cpo_engine.exceptions import BackendError, BusyError, ConfigError, DataError
from cpo_engine.generation import (
    BackendConfig,
    DesignConfig,
    GenerateConfig,
    OpenAIConfig,
    ReplayConfig,
    generate_triplets,
    read_generated,
)
from tests.test_generation import fake_server  # noqa: F401 (the OpenAI-compatible test double, a fixture)

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def log(tmp_path_factory) -> Path:
    """6 queries x 3 prompts x 2 samples of recorded outcomes (for the replay backend), also a queries table."""
    rng = np.random.default_rng(0)
    rows = [{"query_id": f"q{q}", "query_text": f"What is {q} plus 10?", "prompt_id": f"p{p}",
             "prompt_text": f"Prompt {p}: think.", "sample": s, "gold_answer": float(q + 10),
             "score": float(rng.random() < 0.5), "raw_answer": f"The answer is {q + 10}."}
            for q in range(6) for p in range(3) for s in range(2)]
    path = tmp_path_factory.mktemp("log") / "log.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _url(srv) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/v1"


def _replay(log: Path, out: Path, **kw) -> GenerateConfig:
    return GenerateConfig(queries=str(log), out=str(out), shard_size=4,
                          design=DesignConfig(samples_per_cell=2),
                          backend=BackendConfig(kind="replay", replay=ReplayConfig(path=str(log))), **kw)


def _live(log: Path, out: Path, url: str, **kw) -> GenerateConfig:
    return GenerateConfig(queries=str(log), out=str(out), shard_size=4, max_queries=2,
                          backend=BackendConfig(kind="openai", openai=OpenAIConfig(base_url=url, max_retries=0)), **kw)


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def _raw_keys(out: Path) -> list[tuple]:
    """Every key in every shard file (before read_generated's last-wins dedup)."""
    keys = []
    for f in sorted((out / "shards").glob("*.parquet")):
        t = pq.read_table(f, columns=["run_id", "query_id", "prompt_id", "sample"])
        keys += list(zip(*(t.column(c).to_pylist() for c in t.column_names)))
    return keys


def test_all_calls_failed_exits_2_then_retry_errors_completes(log, tmp_path, capsys, fake_server):  # noqa: F811
    out = tmp_path / "o"
    argv = ["generate", "--queries", str(log), "--out", str(out), "--max-queries", "2", "--set",
            "backend.openai.max_retries=0"]
    assert main(argv + ["--base-url", "http://127.0.0.1:9/v1"]) == 2  # nothing listens on port 9
    err = capsys.readouterr().err
    assert "all 6 LLM calls of this run failed" in err and "127.0.0.1:9" in err and "--retry-errors" in err
    assert "Traceback" not in err
    m = _manifest(out)
    assert not m["complete"] and m["errors"] == m["rows"] == 6 and m["summary"]["failed_rows"] == 6
    assert main(argv + ["--base-url", "http://127.0.0.1:9/v1"]) == 0  # a plain rerun keeps the failed rows
    out_text = capsys.readouterr().out
    assert "first error of this run: None" not in out_text and "failed in an earlier run" in out_text
    assert "--retry-errors" in out_text
    assert main(argv + ["--base-url", _url(fake_server), "--retry-errors"]) == 0
    m = _manifest(out)
    assert m["complete"] and m["summary"]["failed_rows"] == 0
    assert read_generated(out).column("error").null_count == 6


def test_verify_style_generation_advises_only_what_it_accepts(log, tmp_path, capsys):
    """verify, nightly and run --verify-* build their generation with retry_errors on: their advice is to rerun,
    not the --retry-errors flag they reject."""
    from cpo_engine.generation import BackendConfig, GenerateConfig, OpenAIConfig

    cfg = GenerateConfig(queries=str(log), out=str(tmp_path / "o"), shard_size=4, max_queries=1, retry_errors=True,
                         backend=BackendConfig(kind="openai", openai=OpenAIConfig(base_url="http://127.0.0.1:9/v1",
                                                                                  max_retries=0)))
    with pytest.raises(BackendError) as exc:
        generate_triplets(cfg, echo=lambda _: None)
    assert "--retry-errors" not in str(exc.value) and "failed calls are retried" in str(exc.value)


def test_some_calls_failed_is_reported_and_not_complete(log, tmp_path, fake_server):  # noqa: F811
    fake_server.script = [(400, 0.0)] * 2  # a 400 is not retried: two rows fail
    lines: list[str] = []
    s = generate_triplets(_live(log, tmp_path / "o", _url(fake_server)), echo=lines.append)
    assert s.errors == 2 and s.generated == 6
    assert any("warning: 2 planned row(s) have no result without error" in ln for ln in lines)
    assert not _manifest(tmp_path / "o")["complete"]
    generate_triplets(_live(log, tmp_path / "o", _url(fake_server), retry_errors=True), echo=lambda _: None)
    assert _manifest(tmp_path / "o")["complete"]


def test_the_replayed_log_is_part_of_the_run_identity(log, tmp_path):
    other = tmp_path / "other.parquet"
    t = pq.read_table(log)
    pq.write_table(t.set_column(t.column_names.index("score"), "score",
                                pa.array(1.0 - t.column("score").to_numpy())), other)
    cfg = _replay(log, tmp_path / "o", max_queries=3)
    generate_triplets(cfg, echo=lambda _: None)
    with pytest.raises(ConfigError, match="replay differ"):
        generate_triplets(_replay(other, tmp_path / "o", max_queries=3), echo=lambda _: None)
    # the same path with other content is another log too
    copy = tmp_path / "log_copy.parquet"
    copy.write_bytes(log.read_bytes())
    generate_triplets(_replay(copy, tmp_path / "c", max_queries=3), echo=lambda _: None)
    copy.write_bytes(other.read_bytes())
    with pytest.raises(ConfigError, match="replay differ"):
        generate_triplets(_replay(copy, tmp_path / "c", max_queries=4), echo=lambda _: None)


def test_credentials_in_the_base_url_never_reach_a_file(log, tmp_path, fake_server, capsys):  # noqa: F811
    url = _url(fake_server).replace("http://", "http://alice:s3cret-key@")
    assert main(["generate", "--queries", str(log), "--out", str(tmp_path / "o"), "--max-queries", "1",
                 "--base-url", url]) == 0
    written = "".join(p.read_bytes().decode("latin-1") for p in (tmp_path / "o").rglob("*") if p.is_file())
    assert "s3cret-key" not in written and "alice" not in written and "***@127.0.0.1" in written
    assert "s3cret-key" not in capsys.readouterr().out
    from cpo_engine.utils import redact_url

    assert redact_url("https://u:p@h.example/v1?api_key=abc&model=m") == "https://***@h.example/v1?api_key=***&model=m"


def _written(folder: Path) -> str:
    return "".join(p.read_bytes().decode("latin-1") for p in folder.rglob("*") if p.is_file())


def test_credentials_on_the_command_line_reach_no_file_and_no_echoed_error(log, tmp_path, fake_server):  # noqa: F811
    """The CLI as a user runs it (its argv, which the folder lock records, holds the URL): user:password@ and
    ?api_key= in --base-url, a key in --api-key-env, and a server whose 401 body echoes what it was sent.
    Nothing written under --out (the .cpo.lock, manifest.json, the shards' error column) holds a credential;
    the path goes before the query string; the environment's key is sent as Bearer, not replaced by Basic."""
    fake_server.script, fake_server.echo = [(401, 0.0)] * 4, True
    port = fake_server.server_address[1]
    url = f"http://alice:pa55-word-xyz@127.0.0.1:{port}/v1?api_key=QUERY-KEY-123&model=m"
    out = tmp_path / "o"
    env = dict(os.environ, CPO_TEST_KEY="sk-ENV-KEY-456", OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-m", "cpo_engine.cli", "generate", "--queries", str(log), "--out", str(out),
                          "--max-queries", "1", "--base-url", url, "--set", "backend.openai.max_retries=0",
                          "--set", "backend.openai.api_key_env=CPO_TEST_KEY"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr[-2000:]  # every call failed (401)
    assert fake_server.auth and all(a == "Bearer sk-ENV-KEY-456" for a in fake_server.auth)
    assert all(p.startswith("/v1/chat/completions?") and "api_key=QUERY-KEY-123" in p for p in fake_server.paths)
    written = _written(out)
    assert (out / ".cpo.lock").is_file() and "--base-url" in (out / ".cpo.lock").read_text()
    errors = [e for f in (out / "shards").glob("*.parquet") for e in pq.read_table(f).column("error").to_pylist() if e]
    assert errors and all("HTTP 401" in e and "Bearer ***" in e for e in errors), errors[:2]
    for secret in ("pa55-word-xyz", "QUERY-KEY-123", "sk-ENV-KEY-456"):
        assert secret not in written and secret not in res.stdout + res.stderr, secret


def test_user_and_password_in_the_url_without_a_key_are_sent_as_basic_auth(fake_server):  # noqa: F811
    import base64

    from cpo_engine.generation import OpenAIConfig
    from cpo_engine.generation.backends.openai_http import OpenAIBackend
    from tests.test_generation import _reqs

    url = f"http://bob:b0b-secret-pw@127.0.0.1:{fake_server.server_address[1]}/v1"
    out = OpenAIBackend(OpenAIConfig(base_url=url, api_key_env="CPO_NO_SUCH_VAR_XYZ"), model="m").generate(_reqs(1))
    assert out[0].error is None
    assert fake_server.auth[0] == "Basic " + base64.b64encode(b"bob:b0b-secret-pw").decode()
    assert fake_server.paths[0] == "/v1/chat/completions"


def test_temp_files_of_a_killed_commit_are_removed(log, tmp_path):
    cfg = _replay(log, tmp_path / "o", max_queries=2)
    generate_triplets(cfg, echo=lambda _: None)
    stale = [tmp_path / "o" / ".manifest.json.k1ll3d.tmp", tmp_path / "o" / "shards" / ".part-000009.parquet.x.tmp"]
    for f in stale:
        f.write_text("cut by kill -9")
    generate_triplets(cfg, echo=lambda _: None)
    assert not any(f.exists() for f in stale)


def test_a_deleted_shard_is_generated_again(log, tmp_path):
    cfg = _replay(log, tmp_path / "o")
    generate_triplets(cfg, echo=lambda _: None)
    before = sorted(tuple(r.values()) for r in read_generated(tmp_path / "o")
                    .select(["query_id", "prompt_id", "sample", "score"]).to_pylist())
    (tmp_path / "o" / "shards" / "part-000002.parquet").unlink()
    with pytest.raises(DataError, match=r"(?s)part-000002\.parquet.*missing.*fix: rerun the same"):
        read_generated(tmp_path / "o")
    s = generate_triplets(cfg, echo=lambda _: None)
    assert s.generated == 4 and _manifest(tmp_path / "o")["complete"]
    after = sorted(tuple(r.values()) for r in read_generated(tmp_path / "o", verify=True)
                   .select(["query_id", "prompt_id", "sample", "score"]).to_pylist())
    assert after == before and len(after) == 36
    keys = _raw_keys(tmp_path / "o")
    assert len(keys) == len(set(keys)) == 36  # no lost and no duplicated triplet


def test_an_edited_shard_is_refused_on_resume(log, tmp_path):
    cfg = _replay(log, tmp_path / "o", max_queries=2)
    generate_triplets(cfg, echo=lambda _: None)
    shard = tmp_path / "o" / "shards" / "part-000000.parquet"
    t = pq.read_table(shard)
    pq.write_table(t.set_column(t.column_names.index("score"), "score", pa.array(np.ones(t.num_rows))), shard)
    with pytest.raises(DataError, match=r"(?s)part-000000\.parquet.*checksum.*fix: delete that shard"):
        generate_triplets(cfg, echo=lambda _: None)


def test_two_writers_of_one_generation_folder(log, tmp_path):
    code = (f"import time; from cpo_engine.utils import FolderLock; FolderLock({str(tmp_path / 'o')!r}, 'x')"
            ".acquire(); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(BusyError, match=rf"(?s)pid {holder.pid} .*or pass another --out"):
            generate_triplets(_replay(log, tmp_path / "o"), echo=lambda _: None)
    finally:
        holder.kill()
        holder.wait()
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_the_llm_proposer_fails_loudly_on_a_dead_server():
    from cpo_engine.generation.backends import make_backend
    from cpo_engine.search import Candidate, LLMProposer

    backend = make_backend(BackendConfig(kind="openai", openai=OpenAIConfig(base_url="http://127.0.0.1:9/v1",
                                                                            max_retries=0)))
    proposer = LLMProposer(backend, per_call=2)
    parents = [Candidate.seed("Let's think step by step.", id="cot"), Candidate.seed("The answer is:", id="plain")]
    with pytest.raises(BackendError, match=r"(?s)all 4 calls of the LLM proposer failed in round 1 .*connection"):
        proposer.propose(parents, 4, round=1)
    assert proposer.stats()["calls"] == proposer.stats()["failed_calls"] == 4
