"""The loop's task (built-in or the user's --queries table), its grader specs, its refusals and its
printed budget, with no LLM (the loop itself runs against a real LLM in tests/engines/test_verify_engines.py
and tests/engines/test_loop_user_task.py)."""

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


# ------------------------------------------------------------------ the loop on the user's own task


def _write_queries(path, n, gold="gold_answer"):
    import pyarrow as pa

    table = pa.table({"query_id": [f"r{i}" for i in range(n)],
                      "query_text": [f"Review {i}: {'loved it' if i % 2 else 'hated it'}. Positive or negative?"
                                     for i in range(n)],
                      gold: ["positive" if i % 2 else "negative" for i in range(n)]})
    if path.suffix == ".csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, path)
    elif path.suffix == ".jsonl":
        import json

        path.write_text("".join(json.dumps(r) + "\n" for r in table.to_pylist()))
    else:
        pq.write_table(table, path)
    return path


_DEAD = ["--endpoint", "http://127.0.0.1:9/v1"]  # nothing listens there: a refusal must come first


def test_user_task_tables_read_alike_in_every_format_and_built_in_tasks_are_such_files(tmp_path):
    from cpo_engine.generation.tasks import builtin_table, read_task, write_example

    tables = [read_task(_write_queries(tmp_path / f"reviews.{ext}", 10)) for ext in ("csv", "jsonl", "parquet")]
    assert tables[0].equals(tables[1]) and tables[0].equals(tables[2])
    assert tables[0].column_names == ["query_id", "query_text", "gold_answer", "task"]
    assert set(tables[0]["task"].to_pylist()) == {"reviews"}
    # the built-in task is a file of the same interface: written, read back and drawn like a user's
    csv = write_example("addition", tmp_path / "addition.csv")
    assert read_task(csv).select(["query_id", "query_text", "gold_answer"]).equals(
        builtin_table("addition").select(["query_id", "query_text", "gold_answer"]))
    user = TaskConfig(queries=str(csv), n_train=60, n_verify=40, seed=3)
    assert draw_queries(user, rounds=2)[0]["query_id"].equals(draw_queries(TaskConfig(seed=3), rounds=2)[0]["query_id"])
    assert user.name == "addition"


def test_grader_specs_of_the_loop(tmp_path, monkeypatch):
    from cpo_engine.generation.graders import FunctionGrader, MultipleChoiceGrader

    assert isinstance(get_grader("choice"), MultipleChoiceGrader) and get_grader("choice:ABCD").letters == "ABCD"
    (tmp_path / "mygrader.py").write_text("def first_word(text, gold):\n"
                                          "    return text.split()[0].strip(',.').lower() == gold\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    g = get_grader("mygrader:first_word")
    assert isinstance(g, FunctionGrader) and g.grade("Positive, clearly", "positive") == 1.0
    with pytest.raises(ConfigError, match="unknown grader"):
        get_grader("sentiment")


@pytest.mark.parametrize("case", ["too_few", "bad_grader", "no_gold", "alias", "few_train"])
def test_loop_refuses_a_bad_task_before_any_llm_call(case, tmp_path, capsys):
    from cpo_engine.cli import main

    q = _write_queries(tmp_path / "reviews.csv", 20, gold="label" if case in ("no_gold",) else "gold_answer")
    if case == "alias":
        q.write_text(q.read_text().replace("query_text", "question", 1))
    args = {"too_few": ["--grader", "exact"],  # default 60 + 40 queries
            "bad_grader": ["--grader", "sentiment", "--train-queries", "14", "--verify-queries", "4"],
            "no_gold": ["--grader", "exact", "--train-queries", "14", "--verify-queries", "4"],
            "alias": ["--grader", "exact", "--train-queries", "14", "--verify-queries", "4"],
            "few_train": ["--grader", "exact", "--train-queries", "8", "--verify-queries", "4"]}[case]
    out = tmp_path / "loop"
    assert main(["loop", "--queries", str(q), "--out", str(out), *_DEAD, *args]) == 2
    printed = capsys.readouterr()
    assert "LLM budget" not in printed.out and not (out / "generate").exists()
    expected = {"too_few": "has 20 queries; 60 training + 1 x 40 verification queries need 100",
                "bad_grader": "unknown grader 'sentiment'",
                "no_gold": "no gold answer column 'gold_answer'",
                "alias": "did you mean 'question'? rename it to 'query_text'",
                "few_train": "pass --train-queries 13 or more (the queries table then needs 17 queries"}[case]
    assert expected in printed.err
    if case == "no_gold":  # the gold column under another name
        rc = main(["loop", "--queries", str(q), "--out", str(out), *_DEAD, *args, "--gold-column", "label",
                   "--max-calls", "0"])
        assert rc == 3 and "LLM budget: at most" in capsys.readouterr().out


def test_loop_prints_its_budget_and_stops_at_max_calls_before_any_call(tmp_path, capsys):
    from cpo_engine.cli import main

    q = _write_queries(tmp_path / "reviews.jsonl", 18)
    out = tmp_path / "loop"
    rc = main(["loop", "--queries", str(q), "--grader", r"regex:\b(positive|negative)\b", "--out", str(out), *_DEAD,
               "--train-queries", "14", "--verify-queries", "4", "--max-tokens", "4", "--max-calls", "0"])
    printed = capsys.readouterr()
    assert rc == 3
    # 14 x 6 generic seed prompts, then 4 queries x (6 seeds + 3 searched) to verify
    assert "LLM budget: at most 120 calls (84 for the training triplets" in printed.out
    assert "at most 480 generated tokens (4 a call)" in printed.out
    assert "stopped at the budget of 0 LLM calls" in printed.err and "rerun the same command" in printed.err
    train = pq.read_table(out / "data" / "train_queries.parquet")
    verify = pq.read_table(out / "data" / "verify_queries_0.parquet")
    assert train.num_rows == 14 and verify.num_rows == 4
    assert not set(train["query_id"].to_pylist()) & set(verify["query_id"].to_pylist())
    assert pq.read_table(out / "data" / "seed_prompts.parquet").num_rows == 6


def test_the_numeric_example_file_serves_its_documented_command(tmp_path, capsys):
    """examples/loop/numbers.csv (docs/generation.md): numeric gold answers, enough queries for the command."""
    from pathlib import Path

    from cpo_engine.cli import main
    from cpo_engine.generation.tasks import read_task

    example = Path(__file__).resolve().parents[1] / "examples" / "loop" / "numbers.csv"
    table = read_task(example)
    grader = get_grader("numeric")
    assert table.num_rows == 120 and all(grader.grade(f"The answer is {g}.", g) == 1.0 for g in table["gold_answer"].to_pylist())
    rc = main(["loop", "--queries", str(example), "--grader", "numeric", "--out", str(tmp_path / "loop"),
               "--train-queries", "20", "--verify-queries", "12", *_DEAD, "--max-calls", "0"])
    assert rc == 3 and "LLM budget: at most 228 calls (120 for the training triplets" in capsys.readouterr().out
