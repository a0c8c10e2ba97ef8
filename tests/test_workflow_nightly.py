"""Nightly re-optimization on seeded triplets with known prompt effects (real query and prompt texts
from the bundled example, real MiniLM embeddings): a stable night shows no drift, a night whose
prompt effects are reversed is flagged, a fit that fails the gate keeps the previous model live,
and embeddings are reused from the state's cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cpo_engine.causal import CausalConfig
from cpo_engine.workflows.common import Representer
from cpo_engine.workflows.config import GateConfig, NightlyConfig
from cpo_engine.workflows.nightly import run_nightly

pytestmark = pytest.mark.slow
N_QUERIES = 60


@pytest.fixture(scope="module")
def texts():
    from cpo_engine.data import load_example

    t = load_example()
    q = list(dict.fromkeys(zip(t["query_id"].to_pylist(), t["query_text"].to_pylist())))[:N_QUERIES]
    p = list(dict.fromkeys(zip(t["prompt_id"].to_pylist(), t["prompt_text"].to_pylist())))
    return q, p


def _night(texts, path: Path, seed: int, sign: float) -> Path:
    """Full grid, 2 samples per cell: P(correct) = sigmoid(a_q + sign * b_p) with fixed b."""
    queries, prompts = texts
    a = np.random.default_rng(0).normal(0, 1, len(queries))
    b = np.linspace(-2.0, 2.0, len(prompts))
    rng = np.random.default_rng(seed)
    rows = []
    for i, (qid, qt) in enumerate(queries):
        for j, (pid, pt) in enumerate(prompts):
            prob = 1 / (1 + np.exp(-(a[i] + sign * b[j])))
            for s in range(2):
                rows.append({"query_id": qid, "query_text": qt, "prompt_id": pid, "prompt_text": pt,
                             "score": float(rng.random() < prob), "sample": s})
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _cfg(state: Path, new: Path, date: str, **kw) -> NightlyConfig:
    cfg = NightlyConfig(state=str(state), new=str(new), date=date, window_days=1, causal=CausalConfig(cv=3), **kw)
    cfg.pca.query_components, cfg.pca.prompt_components = 4, 4
    cfg.embed.device = "cpu"
    return cfg


def _rep(state: Path, encoder) -> Representer:
    return Representer(NightlyConfig().embed, cache_dir=state / "cache", encoder=encoder)


@pytest.mark.timeout(600)
def test_nightly_flags_injected_drift_and_keeps_the_previous_model(texts, tmp_path, encoder):
    state = tmp_path / "state"
    r1 = run_nightly(_cfg(state, _night(texts, tmp_path / "d1.parquet", 1, +1), "2026-01-01"), representer=_rep(state, encoder))
    assert r1["model_status"] == "updated" and r1["comparison"] is None
    shards = sorted((state / "cache").rglob("*.parquet"))

    r2 = run_nightly(_cfg(state, _night(texts, tmp_path / "d2.parquet", 2, +1), "2026-01-02"), representer=_rep(state, encoder))
    c2 = r2["comparison"]
    assert r2["model_status"] == "updated" and not c2["drift"], c2
    assert c2["kendall_tau"] > 0.7 and c2["common_queries"] == N_QUERIES
    assert sorted((state / "cache").rglob("*.parquet")) == shards  # same texts: nothing re-embedded

    r3 = run_nightly(_cfg(state, _night(texts, tmp_path / "d3.parquet", 3, -1), "2026-01-03"), representer=_rep(state, encoder))
    c3 = r3["comparison"]
    assert c3["drift"] and c3["kendall_tau"] < 0 and any("Kendall tau" in r for r in c3["drift_reasons"])
    assert json.loads((state / "current.json").read_text())["date"] == "2026-01-03"

    cfg = _cfg(state, _night(texts, tmp_path / "d4.parquet", 4, +1), "2026-01-04")
    cfg.gate = GateConfig(min_ess_share=1.01)  # no fit can pass: the live model must stay
    r4 = run_nightly(cfg, representer=_rep(state, encoder))
    assert r4["model_status"] == "kept_previous" and r4["live_run"] == "runs/2026-01-03"
    assert "effective sample share" in r4["gate_problems"][0]
    assert json.loads((state / "current.json").read_text())["date"] == "2026-01-03"
    assert not (state / "runs" / "2026-01-04" / "model").exists()
    assert json.loads((state / "runs" / "2026-01-04" / "report.json").read_text())["model_status"] == "kept_previous"
    assert len(list((state / "triplets").glob("*.parquet"))) == 4
