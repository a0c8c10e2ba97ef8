"""Triplet builder: templating, designs and budgets, the sharded store, resume after a real kill,
the replay backend, and the OpenAI-compatible client's retries, timeouts and key handling.

Real LLM engines are exercised in tests/engines/ (marked `engine`). The HTTP server here is a test
double: no real server answers 429/503 or stalls on demand, which is what the retry tests need.
"""

from __future__ import annotations

import json
import os
import random
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

from cpo_engine.exceptions import BackendError, ConfigError, DataError
from cpo_engine.generation import (
    BackendConfig, DesignConfig, GenerateConfig, GenerationRequest, OpenAIConfig, RayConfig, ReplayConfig,
    RowKey, SamplingConfig, TemplateConfig, generate_triplets, read_generated,
)
from cpo_engine.generation.backends.openai_http import OpenAIBackend
from cpo_engine.generation.design import budget_cut, plan_cells
from cpo_engine.generation.stages import DETERMINISTIC_COLUMNS
from cpo_engine.generation.store import ShardStore
from cpo_engine.generation.templating import build_request, prefix_order, shared_prefix_chars
from tests.http_helpers import reply

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------- data

@pytest.fixture(scope="module")
def log_table(tmp_path_factory) -> Path:
    """A recorded full-grid log: 12 queries x 4 prompts x 2 samples, with answers and known scores."""
    rng = np.random.default_rng(0)
    rows = []
    for q in range(12):
        for p in range(4):
            for s in range(2):
                gold = 10 + q
                ok = rng.random() < 0.3 + 0.15 * p
                rows.append({"query_id": f"q{q:02d}", "query_text": f"What is {q} plus 10?",
                             "prompt_id": f"p{p}", "prompt_text": f"Prompt number {p}: think.", "sample": s,
                             "gold_answer": float(gold), "task": "toy", "score": float(ok),
                             "raw_answer": f"The answer is {gold if ok else gold + 1}."})
    path = tmp_path_factory.mktemp("log") / "log.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _cfg(log: Path, out: Path, **kw) -> GenerateConfig:
    base = dict(queries=str(log), out=str(out), shard_size=5,
                backend=BackendConfig(kind="replay", replay=ReplayConfig(path=str(log))))
    base.update(kw)
    return GenerateConfig(**base)


def _rows(out: Path) -> list[tuple]:
    t = read_generated(out)
    keyed = sorted(zip(*(t.column(c).to_pylist() for c in DETERMINISTIC_COLUMNS)), key=lambda r: r[:6])
    return keyed


# ------------------------------------------------------------------------------------- templating

@pytest.mark.parametrize("position, mode, expect", [
    ("suffix", "completion", "Q?\nBe brief."),
    ("prefix", "completion", "Be brief.\nQ?"),
])
def test_template_completion(position, mode, expect):
    req = build_request(TemplateConfig(position=position, mode=mode), RowKey("r", "q", "p", 0), "Q?", "Be brief.",
                        SamplingConfig())
    assert req.text == expect and req.messages is None


def test_template_chat_system_and_format():
    key, s = RowKey("r", "q", "p", 0), SamplingConfig()
    sys_req = build_request(TemplateConfig(position="system"), key, "Q?", "Be brief.", s)
    assert sys_req.messages == ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q?"})
    fmt = build_request(TemplateConfig(mode="completion", format="Question: {query}\nHint: {prompt}\nAnswer:"),
                        key, "Q?", "Be brief.", s)
    assert fmt.text == "Question: Q?\nHint: Be brief.\nAnswer:"


@pytest.mark.parametrize("kw, match", [
    ({"position": "middle"}, "position"), ({"mode": "chat2"}, "mode"),
    ({"position": "system", "mode": "completion"}, "system"), ({"format": "{query} {answer}"}, "format"),
])
def test_template_config_errors(kw, match):
    with pytest.raises(ConfigError, match=match):
        TemplateConfig(**kw)


def test_prefix_order_groups_shared_prefixes():
    rng = random.Random(0)
    texts = [f"{p} {q}" for p in ("Think step by step.", "Answer briefly.", "You are a teacher.")
             for q in ("What is 2+2?", "How many apples?", "Name a color.", "Why is the sky blue?")]
    rng.shuffle(texts)
    ordered = [texts[i] for i in prefix_order(texts)]
    assert sorted(ordered) == ordered
    assert shared_prefix_chars(ordered) > shared_prefix_chars(texts)


def test_row_seed_is_stable_and_distinct():
    a, b = RowKey("run", "q1", "p1", 0), RowKey("run", "q1", "p1", 1)
    assert a.seed(7) == RowKey("run", "q1", "p1", 0).seed(7)
    assert a.seed(7) != b.seed(7) and a.seed(None) is None


# ----------------------------------------------------------------------------------------- design

def test_full_grid_covers_every_cell_once():
    plan = plan_cells([f"q{i}" for i in range(5)], 3, DesignConfig(samples_per_cell=2))
    cells = set(zip(plan.query_idx.tolist(), plan.prompt_idx.tolist(), plan.sample.tolist()))
    assert len(plan) == len(cells) == 5 * 3 * 2


def test_random_k_is_per_query_and_stable_when_queries_are_added():
    cfg = DesignConfig(kind="random_k", k=2, seed=3)
    small = plan_cells(["a", "b", "c"], 6, cfg)
    big = plan_cells(["a", "b", "c", "d", "e"], 6, cfg)
    ids_small, ids_big = ["a", "b", "c"], ["a", "b", "c", "d", "e"]
    pick = lambda plan, ids: {(ids[q], p) for q, p in zip(plan.query_idx, plan.prompt_idx)}  # noqa: E731
    assert pick(small, ids_small) <= pick(big, ids_big)
    assert all(np.bincount(big.query_idx) == 2)


def test_random_k_needs_enough_prompts():
    with pytest.raises(ConfigError, match="exceeds the 3 prompts"):
        plan_cells(["a"], 3, DesignConfig(kind="random_k", k=4))


def test_budget_cut_is_balanced_across_queries():
    cfg = DesignConfig(max_calls=10)
    plan = plan_cells([f"q{i}" for i in range(10)], 4, cfg)
    n = budget_cut(np.full(len(plan), 50), 100, cfg)
    assert n == 10
    assert sorted(plan.query_idx[:n].tolist()) == list(range(10))  # one call per query, not 4 for 3 queries


def test_budget_in_tokens_and_error_mode():
    tokens = np.full(20, 50)
    assert budget_cut(tokens, 100, DesignConfig(max_tokens=1000)) == 6       # 6 * 150 <= 1000 < 7 * 150
    with pytest.raises(ConfigError, match="budget allows 6"):
        budget_cut(tokens, 100, DesignConfig(max_tokens=1000, on_over_budget="error"))


def test_projected_cost_is_printed_before_any_call(log_table, tmp_path):
    lines: list[str] = []
    s = generate_triplets(_cfg(log_table, tmp_path / "o", design=DesignConfig(max_calls=7)), echo=lines.append,
                          dry_run=True)
    assert "48 LLM calls" in lines[0] and "budget cap" in lines[1] and s.planned == 7
    assert not (tmp_path / "o").exists()


# -------------------------------------------------------------------------------- backend configs

def test_backend_registry_has_one_config_section_per_backend():
    import dataclasses

    from cpo_engine.generation.backends import BACKENDS, make_backend

    fields = {f.name: f for f in dataclasses.fields(BackendConfig)}
    for kind, spec in BACKENDS.items():
        assert isinstance(getattr(BackendConfig(kind="openai"), kind), spec.config)
        assert kind in fields and spec.backend.name == kind
    backend = make_backend(BackendConfig(kind="openai", model="m", openai=OpenAIConfig(base_url="http://h/v1/")))
    assert isinstance(backend, BACKENDS["openai"].backend) and backend.model == "m" and backend.base_url == "http://h/v1"


@pytest.mark.parametrize("kw, match", [
    ({"kind": "opnai"}, "did you mean 'openai'"),
    ({"kind": "llamacpp"}, "openai, vllm, replay"),
    ({"kind": "replay"}, r"backend.replay.path.*--replay"),
])
def test_backend_config_errors_name_the_key_and_the_fix(kw, match):
    with pytest.raises(ConfigError, match=match):
        BackendConfig(**kw)


@pytest.mark.parametrize("cls, kw, match", [
    (OpenAIConfig, {"max_concurrency": 0}, "backend.openai.max_concurrency"),
    (OpenAIConfig, {"timeout_s": 0}, "backend.openai.timeout_s"),
    (RayConfig, {"num_engines": 0}, "ray.num_engines"),
    (RayConfig, {"gpus_per_engine": -1}, "ray.gpus_per_engine"),
])
def test_section_errors_name_their_key(cls, kw, match):
    with pytest.raises(ConfigError, match=match):
        cls(**kw)


def test_generate_flags_map_to_the_backend_sections(tmp_path):
    import argparse

    from cpo_engine.commands.generate import add_generate_args, config_from_args

    p = argparse.ArgumentParser()
    add_generate_args(p)
    args = p.parse_args(["--base-url", "http://x/v1", "--concurrency", "3", "--api-key-env", "K", "--model", "m",
                         "--set", "ray.gpus_per_engine=1", "--set", "ray.num_engines=2"])
    cfg = config_from_args(args)
    assert (cfg.backend.kind, cfg.backend.model) == ("openai", "m")
    assert (cfg.backend.openai.base_url, cfg.backend.openai.max_concurrency, cfg.backend.openai.api_key_env) == (
        "http://x/v1", 3, "K")
    assert (cfg.ray.gpus_per_engine, cfg.ray.num_engines) == (1.0, 2)
    replay = config_from_args(p.parse_args(["--backend", "replay", "--replay", str(tmp_path / "log.parquet")]))
    assert replay.backend.replay.path == str(tmp_path / "log.parquet")
    with pytest.raises(ConfigError, match="did you mean 'replay'"):
        config_from_args(p.parse_args(["--backend", "replya"]))
    with pytest.raises(ConfigError, match="num_engines"):  # the pre-split key is refused, not ignored
        config_from_args(p.parse_args(["--set", "backend.num_engines=2"]))


def test_manifest_records_only_the_chosen_backend(log_table, tmp_path):
    generate_triplets(_cfg(log_table, tmp_path / "o", max_queries=1), echo=lambda _: None)
    settings = json.loads((tmp_path / "o" / "manifest.json").read_text())["settings"]["backend"]
    assert settings == {"kind": "replay", "model": "default",
                        "replay": {"path": str(log_table), "text_column": "raw_answer"}}


# ------------------------------------------------------------------------------- builder + store

def test_replay_run_reproduces_the_log(log_table, tmp_path):
    s = generate_triplets(_cfg(log_table, tmp_path / "o", design=DesignConfig(samples_per_cell=2)), echo=lambda _: None)
    assert s.generated == 96 and s.errors == 0
    t = read_generated(tmp_path / "o", verify=True)
    log = pq.read_table(log_table).to_pandas().set_index(["query_id", "prompt_id", "sample"])
    got = t.to_pandas().set_index(["query_id", "prompt_id", "sample"])
    assert (got["score"] == log.loc[got.index, "score"]).all()
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["rows"] == 96 and len(manifest["shards"]) == 20
    assert manifest["kind"] == "generate"


def test_replay_unrecorded_pair_is_a_clear_error(log_table, tmp_path):
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("prompt_id,prompt_text\np0,Prompt number 0: think.\npNEW,A prompt never logged.\n")
    with pytest.raises(DataError, match="no recorded outcome for query_id='q.*', prompt_id='pNEW'"):
        generate_triplets(_cfg(log_table, tmp_path / "o", prompts=str(prompts)), echo=lambda _: None)


def test_rerun_is_a_no_op_and_changed_settings_are_refused(log_table, tmp_path):
    cfg = _cfg(log_table, tmp_path / "o")
    generate_triplets(cfg, echo=lambda _: None)
    again = generate_triplets(cfg, echo=lambda _: None)
    assert again.generated == 0 and again.already_done == 48
    with pytest.raises(ConfigError, match="design differ"):
        generate_triplets(_cfg(log_table, tmp_path / "o", design=DesignConfig(samples_per_cell=2)), echo=lambda _: None)


def test_uncommitted_shard_is_dropped_on_reopen(log_table, tmp_path):
    generate_triplets(_cfg(log_table, tmp_path / "o"), echo=lambda _: None)
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    last = manifest["shards"].pop()
    manifest["rows"] -= last["rows"]
    (tmp_path / "o" / "manifest.json").write_text(json.dumps(manifest))  # as if killed before the commit
    s = generate_triplets(_cfg(log_table, tmp_path / "o"), echo=lambda _: None)
    assert s.generated == last["rows"]
    assert read_generated(tmp_path / "o").num_rows == 48


def test_bad_manifest_is_a_data_error(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="manifest"):
        ShardStore.open(tmp_path, {"run_id": "x"})


def test_missing_columns_name_the_file(tmp_path):
    bad = tmp_path / "queries.csv"
    bad.write_text("query_id,question\nq1,What?\n")
    with pytest.raises(DataError, match="queries.csv.*query_text"):
        generate_triplets(GenerateConfig(queries=str(bad), prompts=str(bad), out=str(tmp_path / "o")),
                          echo=lambda _: None)


def test_failed_calls_go_to_the_error_column(log_table, tmp_path):
    """A real connection failure (nothing listens on the port): rows are kept with an error, score NaN."""
    backend = BackendConfig(kind="openai", openai=OpenAIConfig(base_url="http://127.0.0.1:9/v1", max_retries=1,
                                                               backoff_s=0.01, timeout_s=2))
    with pytest.raises(BackendError, match=r"(?s)all 8 LLM calls .* failed .*127\.0\.0\.1:9"):
        generate_triplets(_cfg(log_table, tmp_path / "o", backend=backend, max_queries=2), echo=lambda _: None)
    t = read_generated(tmp_path / "o")  # the failed rows are committed, so --retry-errors can retry them
    assert t.num_rows == 8 and not json.loads((tmp_path / "o" / "manifest.json").read_text())["complete"]
    assert all("connection error" in e for e in t.column("error").to_pylist())
    assert all(np.isnan(t.column("score").to_numpy()))
    assert read_generated(tmp_path / "o", drop_errors=True).num_rows == 0


# ----------------------------------------------------------------------------- kill and resume

def _cli(log: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "cpo_engine.cli", "generate", "--backend", "replay", "--replay", str(log),
            "--queries", str(log), "--out", str(out), "--samples", "2", "--shard-size", "1"]


def _start(log: Path, out: Path) -> tuple[subprocess.Popen, float]:
    """Start a run; return it once it printed its plan (it is about to commit shards) and the time."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(_cli(log, out), env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    assert proc.stdout is not None
    proc.stdout.readline()
    return proc, time.perf_counter()


@pytest.mark.timeout(240)
def test_kill_at_random_moments_then_resume_equals_uninterrupted_run(log_table, tmp_path):
    ref, _ = _start(log_table, tmp_path / "ref")
    assert ref.wait() == 0
    out, rng, mid_run_kills, rows = tmp_path / "killed", random.Random(1), 0, 0
    while rows < 90 and mid_run_kills < 6:
        proc, _ = _start(log_table, out)
        for _ in range(rng.randint(1, 30)):  # let it commit a random number of shards, then kill it
            proc.stdout.readline()
        time.sleep(rng.uniform(0.0, 0.01))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        manifest = json.loads((out / "manifest.json").read_text())
        rows = manifest["rows"]
        mid_run_kills += not manifest["complete"] and 0 < rows < 96
    assert mid_run_kills >= 3, "the kills never landed mid-run: the test would prove nothing"
    final, _ = _start(log_table, out)
    assert final.wait() == 0
    assert _rows(out) == _rows(tmp_path / "ref")
    assert len(_rows(out)) == 96


# ------------------------------------------------------------------ OpenAI client (test double)

class _Script(BaseHTTPRequestHandler):
    """Answers from `server.script`: a list of (status, delay_s) consumed per request, then 200s."""

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        srv = self.server
        with srv.lock:
            srv.auth.append(self.headers.get("Authorization"))
            srv.paths.append(self.path)
            srv.bodies.append(body)
            status, delay = srv.script.pop(0) if srv.script else (200, 0.0)
            srv.in_flight += 1
            srv.peak = max(srv.peak, srv.in_flight)
        time.sleep(delay)
        with srv.lock:
            srv.in_flight -= 1
        if status not in (200, "html"):
            self.send_response(status)
            self.send_header("Retry-After", "0")
            self.end_headers()
            echo = f" (you sent {self.headers.get('Authorization')} to {self.path})" if srv.echo else ""
            self.wfile.write(json.dumps({"error": {"message": f"status {status}{echo}"}}).encode())
            return
        if status == "html":  # HTTP 200 with a page that is not JSON (a proxy's login page)
            reply(self, b"<html><body>Please log in</body></html>", "text/html")
            return
        text = "The answer is 11." if "messages" in body else " 11"
        choice = {"message": {"role": "assistant", "content": text}} if "messages" in body else {"text": text}
        payload = {"choices": [choice | {"finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 5, "completion_tokens": 4}}
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def fake_server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Script)
    srv.script, srv.auth, srv.bodies, srv.lock, srv.in_flight, srv.peak = [], [], [], threading.Lock(), 0, 0
    srv.paths, srv.echo = [], False  # request paths (with query); echo: error bodies repeat the credentials
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()


def _backend(srv, **kw) -> OpenAIBackend:
    cfg = dict(base_url=f"http://127.0.0.1:{srv.server_address[1]}/v1", backoff_s=0.01, timeout_s=5.0)
    cfg.update(kw)
    return OpenAIBackend(OpenAIConfig(**cfg), model="m")


def _reqs(n: int, chat: bool = True) -> list[GenerationRequest]:
    s = SamplingConfig(temperature=0.7, max_tokens=8, seed=1)
    return [GenerationRequest(key=RowKey("r", f"q{i}", "p", 0), sampling=s,
                              **({"messages": ({"role": "user", "content": "hi"},)} if chat else {"text": "hi"}))
            for i in range(n)]


@pytest.mark.timeout(60)
def test_openai_retries_429_and_5xx_then_succeeds(fake_server):
    fake_server.script = [(429, 0.0), (503, 0.0), (500, 0.0)]
    out = _backend(fake_server, max_retries=3, max_concurrency=1).generate(_reqs(1))
    assert out[0].error is None and out[0].text == "The answer is 11."
    assert (out[0].prompt_tokens, out[0].completion_tokens) == (5, 4)
    assert len(fake_server.bodies) == 4


@pytest.mark.timeout(60)
def test_openai_gives_up_and_reports_per_row(fake_server):
    fake_server.script = [(503, 0.0)] * 3 + [(400, 0.0)]
    out = _backend(fake_server, max_retries=2, max_concurrency=1).generate(_reqs(2))
    assert "HTTP 503" in out[0].error and "gave up after 3 attempts" in out[0].error
    assert out[1].error.startswith("HTTP 400") and len(fake_server.bodies) == 4  # 400 is not retried


@pytest.mark.timeout(60)
def test_a_200_that_is_not_json_is_a_row_error_not_an_abort(fake_server):
    """A proxy's login page with HTTP 200 aborted `cpo generate` / `cpo verify` mid-run; now that row fails,
    says why, and the other rows are answered."""
    fake_server.script = [("html", 0.0)]
    out = _backend(fake_server, max_retries=0, max_concurrency=1).generate(_reqs(2))
    assert out[0].text is None and "not JSON" in out[0].error and "Please log in" in out[0].error
    assert out[1].error is None and out[1].text == "The answer is 11."


@pytest.mark.timeout(60)
def test_openai_timeout_is_a_row_error(fake_server):
    fake_server.script = [(200, 1.5)]
    out = _backend(fake_server, max_retries=0, timeout_s=0.3).generate(_reqs(1))
    assert out[0].text is None and "timeout after 0.3 s" in out[0].error


@pytest.mark.timeout(60)
def test_openai_bounded_concurrency_and_payload(fake_server):
    fake_server.script = [(200, 0.2)] * 12
    out = _backend(fake_server, max_concurrency=3).generate(_reqs(12, chat=False))
    assert all(r.error is None and r.text == " 11" for r in out)
    assert 1 < fake_server.peak <= 3
    body = fake_server.bodies[0]
    assert body["prompt"] == "hi" and body["temperature"] == 0.7 and body["max_tokens"] == 8 and "seed" in body


@pytest.mark.timeout(60)
def test_api_key_is_sent_but_never_logged_or_written(fake_server, log_table, tmp_path, monkeypatch, capsys):
    secret = "sk-test-SECRET-123"
    monkeypatch.setenv("CPO_TEST_KEY", secret)
    fake_server.script = [(401, 0.0)]
    backend = BackendConfig(kind="openai", openai=OpenAIConfig(
        base_url=f"http://127.0.0.1:{fake_server.server_address[1]}/v1", api_key_env="CPO_TEST_KEY", max_concurrency=1))
    lines: list[str] = []
    generate_triplets(_cfg(log_table, tmp_path / "o", backend=backend, max_queries=1), echo=lines.append)
    assert fake_server.auth[0] == f"Bearer {secret}"
    assert secret not in repr(OpenAIBackend(backend.openai))
    written = "".join(p.read_bytes().decode("latin-1") for p in (tmp_path / "o").rglob("*") if p.is_file())
    assert secret not in written and secret not in "".join(lines) + capsys.readouterr().out
    assert "CPO_TEST_KEY" in written  # the variable's name is recorded, not its value


@pytest.mark.timeout(60)
def test_retry_errors_reruns_only_the_failed_rows(fake_server, log_table, tmp_path):
    backend = BackendConfig(kind="openai", openai=OpenAIConfig(
        base_url=f"http://127.0.0.1:{fake_server.server_address[1]}/v1", max_concurrency=1, max_retries=0))
    fake_server.script = [(400, 0.0)] * 3
    first = generate_triplets(_cfg(log_table, tmp_path / "o", backend=backend, max_queries=2), echo=lambda _: None)
    assert first.errors == 3 and read_generated(tmp_path / "o").num_rows == 8
    plain = generate_triplets(_cfg(log_table, tmp_path / "o", backend=backend, max_queries=2), echo=lambda _: None)
    assert plain.generated == 0                      # failed rows are committed: a plain rerun keeps them
    again = generate_triplets(_cfg(log_table, tmp_path / "o", backend=backend, max_queries=2, retry_errors=True),
                              echo=lambda _: None)
    assert again.generated == 3 and again.errors == 0
    t = read_generated(tmp_path / "o")
    assert t.num_rows == 8 and t.column("error").null_count == 8
    assert not np.isnan(t.column("score").to_numpy()).any()


def test_openai_generate_works_inside_a_running_event_loop(fake_server):
    import asyncio

    async def inside() -> list:
        return _backend(fake_server).generate(_reqs(2))

    assert [r.text for r in asyncio.run(inside())] == ["The answer is 11."] * 2


@pytest.mark.parametrize("name", ["generate", "fit", "optimize", "assign", "nightly", "loop"])
def test_job_entrypoints_parse_the_cli_flags(name, capsys):
    import importlib

    with pytest.raises(SystemExit) as exc:
        importlib.import_module(f"jobs.{name}").main(["--help"])
    assert exc.value.code == 0 and f"python -m jobs.{name}" in capsys.readouterr().out


def test_generate_job_exits_2_with_the_error_message_like_the_cli(tmp_path, capsys):
    from jobs.generate import main

    assert main(["--queries", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o")]) == 2
    assert "nope.csv" in capsys.readouterr().err
