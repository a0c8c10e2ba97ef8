"""The sequential design of the verify stage against a real llama.cpp server (SmolLM2-135M-Instruct), with a small
budget: the calls it makes are the calls it reports, within the budget, each candidate with a stop reason, and a
rerun makes no call. Assertions hold for any output of the model."""

from __future__ import annotations

import pyarrow as pa
import pytest

from cpo_engine.config import load_config
from cpo_engine.workflows.config import LoopConfig, VerifyConfig
from cpo_engine.workflows.verify import Arm, measured_matrix, run_arms
from cpo_engine.workflows.verify_sequential import run_sequential

pytestmark = [pytest.mark.engine, pytest.mark.slow]


@pytest.mark.timeout(600)
def test_sequential_verification_on_llama_cpp_keeps_its_budget_and_resumes(llama_server, tmp_path):
    llm = load_config(LoopConfig, None, [f"generation.backend.openai.base_url={llama_server}",
                                         "generation.backend.model=smollm2"]).generation
    pairs = [(a, b) for a in range(1, 10) for b in range(1, 10)][::3][:24]
    queries = pa.table({"query_id": [f"q{i}" for i in range(len(pairs))],
                        "query_text": [f"What is {a} + {b}?" for a, b in pairs],
                        "gold_answer": [str(a + b) for a, b in pairs]})
    arms = [Arm("inc", "Answer with just the number.", "incumbent"), Arm("c1", "", "logged"),
            Arm("c2", "Add the two numbers. Reply with only the sum.", "searched")]
    cfg = VerifyConfig(design="sequential", max_calls=60, batch=6, max_tokens=8, max_queries=24)
    made = []

    def run_batch(q, a):
        rows, gen = run_arms(q, a, llm, cfg, tmp_path, echo=lambda s: None)
        made.append(gen["generated"])
        return rows, gen

    lines: list[str] = []
    rows, gen, seq = run_sequential(queries, arms, cfg, run_batch, measured_matrix, echo=lines.append)
    assert "you can detect an uplift of" in lines[0]
    assert seq["calls"] == sum(made) == rows.num_rows <= 60
    assert all(c["stop_reason"] in ("decided better", "decided worse", "budget spent", "queries exhausted")
               for c in seq["candidates"])
    assert seq["calls"] == sum(c["calls"] for c in seq["candidates"]) + seq["queries_used"]
    made.clear()
    _, _, again = run_sequential(queries, arms, cfg, run_batch, measured_matrix, echo=lambda s: None)
    assert sum(made) == 0 and again["candidates"] == seq["candidates"]
