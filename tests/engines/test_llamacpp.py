"""The OpenAI-compatible backend against a real llama.cpp server (SmolLM2-135M-Instruct on 127.0.0.1):
chat and completion calls, a real kill-and-resume, and the end-to-end path on real model output
(generate -> grade -> fit the causal reward model -> search)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cpo_engine.generation import (
    BackendConfig, DesignConfig, GenerateConfig, GenerationRequest, OpenAIConfig, RowKey, SamplingConfig,
    generate_triplets, read_generated,
)
from cpo_engine.generation.backends.openai_http import OpenAIBackend
from cpo_engine.generation.stages import DETERMINISTIC_COLUMNS

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.engine, pytest.mark.slow]

ARITHMETIC = [(a, b) for a, b in [(2, 3), (4, 4), (10, 5), (7, 1), (6, 3), (9, 9), (12, 8), (3, 30)]]
PROMPTS = [("plain", ""), ("number", "Reply with just the number."), ("steps", "Think step by step.")]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("inputs")
    queries = pa.table({"query_id": [f"add{a}_{b}" for a, b in ARITHMETIC],
                        "query_text": [f"What is {a} plus {b}?" for a, b in ARITHMETIC],
                        "gold_answer": [float(a + b) for a, b in ARITHMETIC], "task": ["add"] * len(ARITHMETIC)})
    prompts = pa.table({"prompt_id": [p for p, _ in PROMPTS], "prompt_text": [t for _, t in PROMPTS]})
    pq.write_table(queries, d / "queries.parquet")
    pq.write_table(prompts, d / "prompts.parquet")
    return d / "queries.parquet", d / "prompts.parquet"


@pytest.mark.timeout(300)
def test_chat_and_completion_against_llama_cpp(llama_server):
    backend = OpenAIBackend(OpenAIConfig(base_url=llama_server, max_concurrency=2, timeout_s=120))
    greedy = SamplingConfig(temperature=0.0, max_tokens=16)
    chat = ({"role": "user", "content": "What is 2 + 3?"},)
    out = backend.generate([
        GenerationRequest(key=RowKey("r", "q", "p", 0), messages=chat, sampling=greedy),
        GenerationRequest(key=RowKey("r", "q", "p", 1), messages=chat, sampling=greedy),
        GenerationRequest(key=RowKey("r", "q2", "p", 0), text="The capital of France is", sampling=greedy),
    ])
    assert [r.error for r in out] == [None, None, None]
    assert "5" in out[0].text and out[0].text == out[1].text      # greedy is deterministic
    assert out[0].prompt_tokens > 10 and 0 < out[0].completion_tokens <= 16 and out[0].latency_s > 0
    assert "Paris" in out[2].text and out[2].finish_reason in ("length", "stop")


def _cli(queries: Path, prompts: Path, out: Path, url: str) -> list[str]:
    return [sys.executable, "-m", "cpo_engine.cli", "generate", "--backend", "openai", "--base-url", url,
            "--queries", str(queries), "--prompts", str(prompts), "--max-queries", "3", "--max-tokens", "12",
            "--temperature", "0", "--shard-size", "1", "--concurrency", "1", "--out", str(out)]


@pytest.mark.timeout(600)
def test_kill_and_resume_with_a_real_server(llama_server, inputs, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    subprocess.run(_cli(*inputs, tmp_path / "ref", llama_server), check=True, env=env, cwd=ROOT, capture_output=True)
    proc = subprocess.Popen(_cli(*inputs, tmp_path / "run", llama_server), env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    while "committed 3/" not in proc.stdout.readline():  # killed mid-run, a request in flight
        pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["rows"] == 3
    subprocess.run(_cli(*inputs, tmp_path / "run", llama_server), check=True, env=env, cwd=ROOT, capture_output=True)
    def rows(d: Path) -> list:
        return sorted(zip(*(read_generated(d).column(c).to_pylist() for c in DETERMINISTIC_COLUMNS)))

    assert rows(tmp_path / "run") == rows(tmp_path / "ref") and len(rows(tmp_path / "ref")) == 9


@pytest.mark.timeout(900)
def test_end_to_end_on_real_model_output(llama_server, inputs, tmp_path):
    """SmolLM2 answers 8 queries x 3 prompts x 2 samples; graded; then `cpo fit` and `cpo optimize`."""
    from cpo_engine.cli import main

    cfg = GenerateConfig(queries=str(inputs[0]), prompts=str(inputs[1]), out=str(tmp_path / "gen"),
                         backend=BackendConfig(kind="openai", openai=OpenAIConfig(base_url=llama_server,
                                                                                  max_concurrency=1)),
                         sampling=SamplingConfig(temperature=0.7, max_tokens=24, seed=0), shard_size=8,
                         design=DesignConfig(samples_per_cell=2))
    summary = generate_triplets(cfg, echo=lambda _: None)
    assert summary.generated == 48 and summary.errors == 0 and summary.completion_tokens > 0
    table = read_generated(tmp_path / "gen", drop_errors=True)
    scores = table.column("score").to_pylist()
    assert 0 < sum(scores) < len(scores), "the real model should get some, not all, answers right"
    data = tmp_path / "triplets.parquet"
    pq.write_table(table, data)
    common = ["--set", f"embed.cache_dir={tmp_path / 'cache'}", "--set", "embed.num_threads=1"]
    pca = ["--set", "pca.query_components=3", "--set", "pca.prompt_components=2"]  # optimize reads the bundle's
    assert main(["fit", str(data), "--out", str(tmp_path / "fit"), "--cv", "2", *pca, *common]) == 0
    assert main(["optimize", str(data), "--model", str(tmp_path / "fit" / "model"), "--out", str(tmp_path / "opt"),
                 "--rounds", "1", "--beam-width", "2", "--children", "4", *common]) == 0
    assignment = pq.read_table(tmp_path / "opt" / "assignment.parquet")
    assert assignment.num_rows == len(ARITHMETIC)
    assert set(assignment.column("recommended_prompt_id").to_pylist()) <= {p for p, _ in PROMPTS}
    assert pq.read_table(tmp_path / "opt" / "candidates.parquet").num_rows > len(PROMPTS)
