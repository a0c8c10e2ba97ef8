"""The loop's task generator and configuration (the loop itself runs against a real LLM in
tests/engines/test_verify_engines.py)."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from cpo_engine.exceptions import ConfigError
from cpo_engine.generation.graders import get_grader
from cpo_engine.generation.local_server import LocalServerConfig
from cpo_engine.generation.tasks import TaskConfig, addition_pool, draw_queries, write_task


def test_addition_queries_are_distinct_with_correct_gold_answers():
    pool = addition_pool()
    assert len(pool) == len({q for q, _, _ in pool}) == len({t for _, t, _ in pool}) == 324
    grader = get_grader("numeric")
    for qid, text, gold in pool:
        a, b = map(int, qid.split("-")[1:3])
        assert str(a) in text and str(b) in text and gold == str(a + b)
        assert grader.grade(f"The answer is {a + b}.", gold) == 1.0


def test_training_and_verification_queries_never_overlap_and_are_reproducible(tmp_path):
    cfg = TaskConfig(n_train=60, n_verify=40, seed=3)
    train, verify = draw_queries(cfg, rounds=3)
    sets = [set(train["query_text"].to_pylist())] + [set(v["query_text"].to_pylist()) for v in verify]
    assert [len(s) for s in sets] == [60, 40, 40, 40] and len(set().union(*sets)) == 180
    again, verify1 = draw_queries(cfg, rounds=1)  # more rounds never change earlier blocks
    assert again.equals(train) and verify1[0].equals(verify[0])
    paths = write_task(cfg, tmp_path, rounds=1)
    assert pq.read_table(paths["prompts"]).num_rows == 6 and pq.read_table(paths["verify_0"]).num_rows == 40
    with pytest.raises(ConfigError, match="324 queries"):
        draw_queries(TaskConfig(n_train=300, n_verify=40), rounds=1)


def test_bad_loop_settings_are_config_errors(capsys):
    from cpo_engine.cli import main

    with pytest.raises(ConfigError):
        TaskConfig(kind="sentiment")
    with pytest.raises(ConfigError):
        LocalServerConfig(threads=0)
    assert main(["loop", "--task", "nope", "--out", "unused"]) == 2
    assert "task.kind 'nope' is not a task" in capsys.readouterr().err
