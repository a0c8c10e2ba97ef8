"""bench/cs_replay.py (a finished sequential verification replayed from its stored rows) and bench/loop_confirm.py's
choice of prompts and fresh queries: no LLM call, a verification folder written the way the verify stage writes it."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cpo_engine.causal import sequential as sq

ROOT = Path(__file__).resolve().parents[1]


def _mod(name: str):
    if str(ROOT / "bench") not in sys.path:
        sys.path.insert(0, str(ROOT / "bench"))
    return importlib.import_module(name)


def _verification(folder: Path, seed: int = 0) -> dict:
    """Run the sequential procedure on simulated 0/1 scores (incumbent, a better and a worse candidate), keeping the
    rows it paid for in run order, and write verification.json and verified_triplets.parquet as the stage does."""
    rng = np.random.default_rng(seed)
    n, arms = 120, ["inc", "good", "bad"]
    qid = [f"q{i:03d}" for i in rng.permutation(n)]  # the stage runs its queries in a random order and records it
    Y = np.stack([rng.random(n) < p for p in (0.4, 0.75, 0.1)]).astype(float)
    rows = []

    def draw(active, a, b):
        for q in range(a, b):
            for i in [0] + [j + 1 for j in active]:
                rows.append({"query_id": qid[q], "prompt_id": arms[i], "score": Y[i, q]})
        return Y[[j + 1 for j in active], a:b] - Y[0, a:b]

    res = sq.sequential_verify(draw, 2, n, 3 * n, alpha=0.05, batch=10)
    used = res.history[-1]["queries"]
    seq = {"rule": "test", "alpha": 0.05, "query_order": qid[:used], "budget_calls": 3 * n, "batch": 10, "margin": 0.0,
           "power": {"assumed_sd": 0.5},
           "candidates": [{"id": arms[c.index + 1], "decision": c.decision, "queries": c.n} for c in res.candidates]}
    v = {"arms": [{"id": a, "text": a.upper()} for a in arms], "sequential": seq, "config": {"verify": {"samples": 1}}}
    folder.mkdir(parents=True)
    (folder / "verification.json").write_text(json.dumps(v))
    order = rng.permutation(len(rows))  # stored as the calls completed, not in the order the rule saw them
    pq.write_table(pa.Table.from_pylist([rows[i] for i in order]), folder / "verified_triplets.parquet")
    return v


def test_replay_takes_the_recorded_decisions_and_refuses_a_record_it_cannot_reproduce(tmp_path, monkeypatch):
    cs_replay = _mod("cs_replay")
    monkeypatch.setattr(cs_replay, "ROOT", tmp_path)
    vdir = tmp_path / "loop" / "round-0" / "verify"
    v = _verification(vdir)
    assert v["sequential"]["candidates"][0]["decision"] == "better"
    r = cs_replay.one_round(vdir, sq)  # the "old" rule is this one: the replay must agree with the record
    assert r["old"]["promoted"] == r["new"]["promoted"] == ["good"] and r["new"]["cells_never_run"] == 0
    assert [c["old"]["queries"] for c in r["per_candidate"]] == [c["queries"] for c in v["sequential"]["candidates"]]
    v["sequential"]["candidates"][1]["queries"] += 10  # a record the rows cannot have produced
    (vdir / "verification.json").write_text(json.dumps(v))
    with pytest.raises(SystemExit, match="does not take the recorded decisions"):
        cs_replay.one_round(vdir, sq)


def test_confirm_uses_the_replayed_promotion_and_only_queries_the_loop_never_saw(tmp_path, monkeypatch):
    confirm = _mod("loop_confirm")
    monkeypatch.setattr(confirm, "ROOT", tmp_path)
    from cpo_engine.generation.tasks import builtin_table

    folder = tmp_path / "loop"
    (folder / "data").mkdir(parents=True)
    ids = builtin_table("addition").column("query_id").to_pylist()
    pq.write_table(pa.table({"query_id": ids[:60]}), folder / "data" / "train_queries.parquet")
    pq.write_table(pa.table({"query_id": ids[60:260]}), folder / "data" / "verify_queries_0.parquet")
    (folder / "loop_config.json").write_text(json.dumps({"task": {"kind": "addition", "queries": None}}))
    arms = [{"id": "seed2", "text": "A"}, {"id": "c1", "text": "B"}, {"id": "c2", "text": "C"}]
    (folder / "loop_report.json").write_text(json.dumps({"rounds": [{"round": 0, "verification": {
        "arms": arms, "best_promotable": None}}]}))
    assert confirm.promotions(folder, None) == []  # nothing promoted by the recorded rule
    replay = {"rounds": [{"verify_dir": "loop/round-0/verify", "new": {"promoted": ["c1"]}}]}
    assert confirm.promotions(folder, replay)[0]["promoted"]["id"] == "c1"
    replay["rounds"][0]["new_random_order"] = {"promoted": ["c2"]}  # the stage's order now: this one counts
    (p,) = confirm.promotions(folder, replay)
    assert p["promoted"] == {"id": "c2", "text": "C"} and p["incumbent"]["id"] == "seed2" and "random" in p["rule"]
    fresh = confirm.fresh_queries(folder, 300, 1)
    assert len(fresh) == len(ids) - 260 and not {r["query_id"] for r in fresh} & set(ids[:260])
    assert [r["query_id"] for r in confirm.fresh_queries(folder, 20, 1)] == [
        r["query_id"] for r in confirm.fresh_queries(folder, 20, 1)]
