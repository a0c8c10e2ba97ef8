"""The cost ledger on a real LLM (llama.cpp's server running SmolLM2-135M-Instruct on 127.0.0.1): `cpo
generate` prints its estimate of the calls before the first call reaches the backend, and its manifest records
the calls and tokens the server reported."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cpo_engine.generation import BackendConfig, GenerateConfig, OpenAIConfig, SamplingConfig, generate_triplets
from cpo_engine.generation.backends.openai_http import OpenAIBackend
from cpo_engine.utils import LEDGER

pytestmark = [pytest.mark.engine, pytest.mark.slow]


@pytest.mark.timeout(300)
def test_generate_prints_its_estimate_before_the_first_call_and_records_its_cost(llama_server, tmp_path):
    pq.write_table(pa.table({"query_id": ["a", "b"], "query_text": ["What is 2 plus 3?", "What is 4 plus 4?"],
                             "gold_answer": [5.0, 8.0]}), tmp_path / "queries.parquet")
    pq.write_table(pa.table({"prompt_id": ["plain", "number"], "prompt_text": ["", "Reply with just the number."]}),
                   tmp_path / "prompts.parquet")
    events: list[tuple[str, str]] = []

    class Recording(OpenAIBackend):
        def generate(self, requests):  # type: ignore[no-untyped-def]
            events.append(("call", str(len(requests))))
            return super().generate(requests)

    server = OpenAIConfig(base_url=llama_server, max_concurrency=1, timeout_s=120)
    cfg = GenerateConfig(queries=str(tmp_path / "queries.parquet"), prompts=str(tmp_path / "prompts.parquet"),
                         out=str(tmp_path / "gen"), backend=BackendConfig(kind="openai", openai=server),
                         sampling=SamplingConfig(temperature=0.0, max_tokens=8), shard_size=2)
    LEDGER.reset()
    summary = generate_triplets(cfg, backend=Recording(server), echo=lambda s: events.append(("echo", s)))
    assert summary.generated == 4 and summary.errors == 0
    first_call = next(i for i, (kind, _) in enumerate(events) if kind == "call")
    assert any(kind == "echo" and "4 LLM calls, <= " in text for kind, text in events[:first_call]), events
    cost = json.loads((tmp_path / "gen" / "manifest.json").read_text())["cost"]
    gen = cost["stages"]["generate"]
    assert gen["llm_calls"] == 4 and gen["prompt_tokens"] == summary.prompt_tokens > 0
    assert gen["completion_tokens"] == summary.completion_tokens > 0 and gen["seconds"] > 0
    assert all(v >= 0 for row in cost["stages"].values() for v in row.values())
