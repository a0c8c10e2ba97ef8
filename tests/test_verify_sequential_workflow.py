"""The sequential design of the verify stage through the real generation store, with the replay backend
(recorded outcomes of the bundled example stand in for the LLM): calls used, stop reasons, the budget, resume."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from cpo_engine.config import load_config
from cpo_engine.workflows.config import RunConfig, VerifyConfig
from cpo_engine.workflows.verify import Arm, measured_matrix, run_arms
from cpo_engine.workflows.verify_sequential import best_sequential, run_sequential, sequential_lines


@pytest.fixture(scope="module")
def mawps(tmp_path_factory):
    from tests.conftest import mawps_subset

    return mawps_subset(tmp_path_factory, 400, "mawps400.parquet")


def _queries(path):
    t = pq.read_table(path, columns=["query_id", "query_text", "gold_answer"])
    first = {q: (x, g) for q, x, g in zip(*t.to_pydict().values())}
    import pyarrow as pa

    ids = sorted(first)
    return pa.table({"query_id": ids, "query_text": [first[q][0] for q in ids],
                     "gold_answer": [str(first[q][1]) for q in ids]})


def _arms(path, ids):
    t = pq.read_table(path, columns=["prompt_id", "prompt_text"])
    text = dict(zip(t["prompt_id"].to_pylist(), t["prompt_text"].to_pylist()))
    return [Arm(i, text[i], "incumbent" if j == 0 else "logged") for j, i in enumerate(ids)]


@pytest.mark.timeout(300)
def test_sequential_verify_stops_decided_candidates_and_keeps_the_budget(mawps, tmp_path):
    llm = load_config(RunConfig, None, ["generation.backend.kind=replay", f"generation.backend.replay.path={mawps}",
                                        "generation.backend.replay.text_column=prompt_text"]).generation
    cfg = VerifyConfig(design="sequential", max_calls=900, batch=20, max_queries=400)
    queries = _queries(mawps)
    # the incumbent scores 0.29 on mawps; CoT 0.61 (better), gpt4_9 0.13 (worse), gpt4_3 0.37 (close)
    arms = _arms(mawps, ["gpt4_6", "CoT", "gpt4_9", "gpt4_3"])
    out, lines = tmp_path / "verify", []
    calls = []

    def run_batch(q, a):
        calls.append(q.num_rows * len(a))
        return run_arms(q, a, llm, cfg, out, echo=lambda s: None)

    rows, gen, seq = run_sequential(queries, arms, cfg, run_batch, measured_matrix, echo=lines.append)
    assert lines[0].startswith("sequential verification: with this budget (225 paired queries per candidate")
    assert "you can detect an uplift of" in lines[0]
    by = {c["id"]: c for c in seq["candidates"]}
    assert by["CoT"]["stop_reason"] == "decided better" and by["gpt4_9"]["stop_reason"] == "decided worse"
    assert by["CoT"]["queries"] < 225 and by["CoT"]["cs_low"] > 0 and by["gpt4_9"]["cs_high"] < 0
    assert seq["calls"] == sum(calls) == rows.num_rows <= 900  # every call counted, within the budget
    assert seq["calls"] == sum(c["calls"] for c in seq["candidates"]) + seq["queries_used"]
    assert by["gpt4_3"]["stop_reason"] in ("budget spent", "decided better", "queries exhausted")
    assert by["gpt4_3"]["queries"] > by["CoT"]["queries"]  # it got the budget the decided ones freed
    assert gen["batches"] == seq["looks"] and gen["errors_total"] == 0
    assert any("`CoT`: decided better after" in s for s in sequential_lines(seq))
    report = {"sequential": seq, "arms": [{"id": a.id, "uplift_vs_baseline": None} for a in arms[1:]]}
    assert best_sequential(report)["id"] in {c["id"] for c in seq["candidates"] if c["decision"] == "better"}
    # a rerun replays the stored batches: the same decisions, nothing generated twice
    rows2, gen2, seq2 = run_sequential(queries, arms, cfg, run_batch, measured_matrix, echo=lambda s: None)
    assert seq2["candidates"] == seq["candidates"] and gen2["generated"] == 0


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_cpo_run_and_verify_with_the_sequential_design(mawps, tmp_path, capsys):
    """`cpo run` with `verify.design=sequential` (replay backend): the headroom line and summary.json entry, the
    power statement before the first call, the sequential section and CS verdicts in verification.json; `cpo
    verify` replays the stored batches with no new call."""
    import json

    from cpo_engine.cli import main

    out = tmp_path / "run"
    common = ["--set", "generation.backend.kind=replay", "--set", f"generation.backend.replay.path={mawps}",
              "--set", "generation.backend.replay.text_column=prompt_text", "--set", "verify.seeds=all",
              "--set", "verify.max_queries=60", "--set", "verify.design=sequential", "--set", "verify.batch=10",
              "--set", f"embed.cache_dir={tmp_path / 'cache'}"]
    assert main(["run", "--data", str(mawps), "--out", str(out), "--proposer", "none", *common]) == 0
    printed = capsys.readouterr().out
    assert "headroom: between-prompt sd" in printed and "-> optimizing can pay" in printed
    assert json.loads((out / "summary.json").read_text())["headroom"]["verdict"] == "can pay"
    assert printed.index("you can detect an uplift of") < printed.index("to generate")
    report = json.loads((out / "verify" / "verification.json").read_text())
    seq = report["sequential"]
    assert report["budget"]["calls"] == seq["calls"] <= seq["budget_calls"] == 60 * 16
    cands = {c["id"]: c for c in seq["candidates"]}
    assert len(cands) == 15 and all(c["stop_reason"] for c in cands.values())
    verdicts = {"better": "better", "worse": "worse", "undecided": "tie"}
    assert all(a["verdict"] == verdicts[cands[a["id"]]["decision"]] for a in report["arms"][1:])
    assert any(c["decision"] == "worse" and c["queries"] < 60 for c in cands.values())  # stopped early
    assert "Sequential verification" in (out / "verify" / "verification.md").read_text()
    assert main(["verify", str(out), *common]) == 0
    again = capsys.readouterr().out
    assert "to generate" in again and all(s.endswith("; 0 to generate") for s in again.splitlines()
                                          if s.endswith("to generate"))
    assert json.loads((out / "verify" / "verification.json").read_text())["sequential"]["candidates"] == \
        seq["candidates"]


def test_queries_run_in_a_seeded_random_order_not_in_id_order(tmp_path):
    """Query ids often encode a kind: here the first half (ids 'a-...') favour the candidate by +0.6 and the
    second ('b-...') favour the incumbent by as much, so the candidate is no better overall. In id order the
    rule would see only 'a' queries first and promote it in nearly every run; in a seeded random order (the
    recorded ``query_order``, the same on a rerun) it promotes it in at most alpha of 200 seeds plus MC error."""
    import numpy as np
    import pyarrow as pa

    n = 200
    ids = [f"{'a' if i < n // 2 else 'b'}-{i:03d}" for i in range(n)]
    queries = pa.table({"query_id": ids, "query_text": ids, "gold_answer": ["1"] * n})
    arms = [Arm("inc", "I", "incumbent"), Arm("cand", "C", "logged")]

    def outcome(q: str, arm: str, seed: int) -> float:  # 0/1 scores: on 'a' the candidate 0.8 vs 0.2, on 'b' reversed
        p = {("a", "cand"): 0.8, ("a", "inc"): 0.2, ("b", "cand"): 0.2, ("b", "inc"): 0.8}[(q[0], arm)]
        return float(np.random.default_rng([seed, int(q[2:]), arm == "cand"]).random() < p)

    promoted, orders = 0, set()
    for seed in range(200):
        cfg = VerifyConfig(design="sequential", batch=10, max_queries=n, seed=seed)

        def run_batch(q, a, seed=seed):
            rows = [{"query_id": x, "prompt_id": arm.id, "score": outcome(x, arm.id, seed), "sample": 0, "error": None}
                    for x in q.column("query_id").to_pylist() for arm in a]
            return pa.Table.from_pylist(rows), {"store": "memory (a test double for the LLM: simulated 0/1 grades)"}

        _, _, seq = run_sequential(queries, arms, cfg, run_batch, measured_matrix, echo=lambda s: None)
        promoted += seq["candidates"][0]["decision"] == "better"
        orders.add(tuple(seq["query_order"][:20]))
        if seed == 0:
            _, _, again = run_sequential(queries, arms, cfg, run_batch, measured_matrix, echo=lambda s: None)
            assert again["query_order"] == seq["query_order"] and again["candidates"] == seq["candidates"]
            assert sorted(seq["query_order"]) != seq["query_order"]
    assert promoted / 200 <= 0.05 + 3 * (0.05 * 0.95 / 200) ** 0.5, f"promoted in {promoted} of 200 runs"
    assert len(orders) == 200
