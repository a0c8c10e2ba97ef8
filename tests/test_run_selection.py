"""One per-query selection rule (issue 22): :func:`cpo_engine.search.select.select_per_query` is its only
definition, and `cpo run` applies it once: the held-out evaluation's per-query choices
(``search/held_out_choices.parquet``, the choices ``pool_evaluation.json`` scored) and ``assignment.parquet``
agree row for row on the held-out queries."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from cpo_engine.search import select_per_query

ROOT = Path(__file__).resolve().parents[1]


def test_the_rule_keeps_the_incumbent_unless_a_bound_is_strictly_higher():
    eff = np.array([[0.0, 0.3, 0.1], [0.0, 0.1, 0.05], [0.0, 0.0, -0.2], [0.0, np.nan, 0.05]])
    se = np.array([[0.0, 0.1, 0.1], [0.0, 0.2, 0.1], [0.0, 0.0, 0.1], [0.0, 0.1, 0.01]])
    choice, objective = select_per_query(eff, se, 1.0, incumbent=0)
    np.testing.assert_allclose(objective[0], [0.0, 0.2, 0.0])
    # 0.2 > 0: leaves; both bounds <= 0: stays; a tie at 0 with the incumbent: stays; a NaN bound never wins
    assert choice.tolist() == [1, 0, 0, 2]
    assert select_per_query(eff, se, 1.0, incumbent=0, bias=np.array([0.0, -np.inf, 0.0]))[0].tolist() == [0, 0, 0, 2]
    # without an incumbent: the best bound, the first of tied ones; z = 0 (or no se): the point estimate
    assert select_per_query(eff, se, 1.0)[0].tolist() == [1, 0, 0, 2]
    assert select_per_query(eff)[0].tolist() == select_per_query(eff, se, 0.0)[0].tolist() == [1, 1, 0, 2]
    # a tie with the incumbent at a higher index goes to the incumbent, not to the first column
    assert select_per_query(np.array([[0.1, 0.1]]), incumbent=1)[0].tolist() == [1]


def test_one_definition_of_the_rule():
    """No other module picks a per-query argmax of a lower bound (effect - z * se) itself."""
    pattern = re.compile(r"argmax\([^)]*-\s*(self\.|scorer\.)?z\s*\*")
    hits = [str(p.relative_to(ROOT)) for p in (ROOT / "cpo_engine").rglob("*.py")
            if pattern.search(p.read_text())]
    assert hits == []
    defs = [str(p.relative_to(ROOT)) for p in (ROOT / "cpo_engine").rglob("*.py")
            if "def select_per_query(" in p.read_text()]
    assert defs == ["cpo_engine/search/select.py"]


def _run(small_example: Path, out: Path, *extra: str) -> None:
    from cpo_engine.cli import main

    assert main(["--quiet", "run", "--data", str(small_example), "--out", str(out), "--proposer", "none",
                 "--set", f"embed.cache_dir={out.parent / 'cache'}", "--set", "embed.device=cpu", *extra]) == 0


def _check_agreement(run: Path) -> tuple[list[str], list[str]]:
    """The held-out evaluation's choices equal the assignment's held-out rows, and the evaluation's numbers are
    those of these choices on the recorded outcomes."""
    import pyarrow.compute as pc

    chosen = pq.read_table(run / "search" / "held_out_choices.parquet").to_pydict()
    assign = pq.read_table(run / "search" / "assignment.parquet")
    held = assign.filter(pc.equal(assign["split"], "test")).to_pydict()
    assert chosen["query_id"] == held["query_id"] and len(held["query_id"]) > 0
    assert chosen["causal_lcb"] == held["recommended_prompt_id"]  # row for row
    static = held["static_prompt_id"][0]
    assert set(chosen["static_prompt_id"]) == {static}
    evaluation = json.loads((run / "search" / "pool_evaluation.json").read_text())
    ev = evaluation["evaluations"]["causal_lcb"]
    data = json.loads((run / "manifest.json").read_text())["data"]["path"]
    t = pq.read_table(data, columns=["query_id", "prompt_id", "score"]).group_by(["query_id", "prompt_id"]).aggregate(
        [("score", "mean")]).to_pydict()
    mean = {(q, p): s for q, p, s in zip(t["query_id"], t["prompt_id"], t["score_mean"])}
    value = np.mean([mean[(q, p)] for q, p in zip(chosen["query_id"], chosen["causal_lcb"])])
    assert ev["policy_value"] == pytest.approx(value, abs=1e-12)
    assert ev["share_not_static"] == pytest.approx(np.mean([p != static for p in chosen["causal_lcb"]]))
    assert ev["n_queries"] == len(chosen["query_id"])
    return chosen["causal_lcb"], held["departs_from_static"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_cpo_run_held_out_evaluation_and_assignment_agree_row_for_row(small_example, tmp_path):
    # z = 0 and no fallback: the per-query choice departs from the static prompt on many queries
    _run(small_example, tmp_path / "per_query", "--z", "0", "--set", "policy.fallback=false")
    lcb, departs = _check_agreement(tmp_path / "per_query")
    assert len(set(lcb)) > 1 and any(departs)
    # the defaults on 80 queries: the reliability checks fail and the policy falls back to the static prompt; the
    # held-out evaluation scores that fallback (it used to score a per-query choice the assignment did not make)
    _run(small_example, tmp_path / "fallback")
    lcb, departs = _check_agreement(tmp_path / "fallback")
    policy = json.loads((tmp_path / "fallback" / "search" / "pool_evaluation.json").read_text())["policy"]
    assert policy["fallback"] is True and len(set(lcb)) == 1 and not any(departs)
