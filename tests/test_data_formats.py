"""Logs as people have them: their own column names (--columns / data.columns), no id columns, and chat-format
JSONL records (system prompt, user turn, answer, a score or thumbs up/down), through the real `cpo` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from cpo_engine.cli import main

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "chat" / "chat_logs.jsonl"
COMMANDS = ("validate", "run", "fit", "evaluate", "ope", "assign", "nightly", "embed", "optimize")


def _chat(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def _record(system: str | None, user: str, answer: str, **fields) -> dict:
    msgs = ([{"role": "system", "content": system}] if system is not None else []) + [
        {"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return {"messages": msgs, **fields}


def test_the_chat_example_reads_as_triplets():
    from cpo_engine.data import read_triplets

    t = read_triplets(EXAMPLE)
    lines = [json.loads(x) for x in EXAMPLE.read_text().splitlines()]
    assert t.num_rows == len(lines) == 48
    first = lines[1]  # has a system prompt
    row = {k: t.column(k)[1].as_py() for k in ("prompt_text", "query_text", "answer", "score", "conversation_id")}
    assert row == {"prompt_text": first["messages"][0]["content"], "query_text": first["messages"][1]["content"],
                   "answer": first["messages"][2]["content"], "score": 1.0 if first["thumbs"] == "up" else 0.0,
                   "conversation_id": first["conversation_id"]}
    assert t.column("prompt_text")[0].as_py() == "" and t.column("prompt_id")[0].as_py() == "p-empty"
    assert sorted(set(t.column("score").to_pylist())) == [0.0, 1.0]
    assert len(set(t.column("prompt_id").to_pylist())) == 3 and len(set(t.column("query_id").to_pylist())) == 16
    assert all(q.startswith("q-") and len(q) == 14 for q in t.column("query_id").to_pylist())


def test_cpo_validate_reads_chat_logs_with_a_named_score_field(tmp_path, capsys):
    path = _chat(tmp_path / "logs.jsonl", [_record(s, q, "42", feedback={"up": "positive", "down": "negative"}[f],
                                                   score=7)
                                           for s, f in (("Be brief.", "up"), (None, "down"))
                                           for q in ("What is 6*7?", "What is 40+2?")])
    assert main(["validate", str(path), "--score-field", "feedback", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == 4 and summary["prompts"] == 2 and summary["score_mean"] == 0.5
    assert main(["validate", str(path), "--json"]) == 0  # default: the 'score' field (7 everywhere)
    assert json.loads(capsys.readouterr().out)["score_mean"] == 7.0


@pytest.mark.parametrize("bad, words", [
    ('{"messages": [', ["line 3 is not valid JSON"]),
    (json.dumps({"id": 1, "thumbs": "up"}), ["line 3", 'no "messages"']),
    (json.dumps(_record(None, "Q3?", "a", thumbs="meh")), ["line 3", "'thumbs' is 'meh'", "up/down"]),
    (json.dumps({"messages": [{"role": "system", "content": "x"}], "thumbs": "up"}), ["line 3 has no user message"]),
    (json.dumps(_record(None, "Q3?", "a", rating=1)), ["line 3 has no 'thumbs' field"]),
])
def test_chat_errors_name_the_file_and_the_line(tmp_path, capsys, bad, words):
    path = _chat(tmp_path / "logs.jsonl", [_record("Be brief.", "Q1?", "a", thumbs="up"),
                                           _record(None, "Q2?", "b", thumbs="down"), bad])
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    for w in [str(path), *words]:
        assert w in err, (w, err)


def test_columns_map_a_csv_and_ids_are_derived(tmp_path, capsys, tiny_table):
    theirs = tiny_table.drop_columns(["query_id", "prompt_id"]).rename_columns(
        ["question", "system_prompt", "answer_score"])
    path = tmp_path / "mine.csv"
    pacsv.write_csv(theirs, path)
    assert main(["validate", str(path)]) == 2
    assert "--columns question=query_text" in capsys.readouterr().err  # the hint names the flag
    assert main(["validate", str(path), "--columns", "question=query_text,system_prompt=prompt_text,"
                 "answer_score=score", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["queries"] == 3
    from cpo_engine.data import read_triplets

    t = read_triplets(path, "question=query_text,system_prompt=prompt_text,answer_score=score")
    assert t.column("query_id").to_pylist()[0] == t.column("query_id").to_pylist()[1]  # same text, same id
    assert len(set(t.column("query_id").to_pylist())) == 3 and len(set(t.column("prompt_id").to_pylist())) == 2
    again = read_triplets(path, {"question": "query_text", "system_prompt": "prompt_text", "answer_score": "score"})
    assert again.column("query_id").equals(t.column("query_id"))  # stable across reads


def test_column_mapping_errors_name_the_file_and_column(tmp_path, capsys, tiny_table):
    path = tmp_path / "t.parquet"
    pq.write_table(tiny_table.rename_columns(["qid", "question", "prompt_id", "prompt_text", "score"]), path)
    assert main(["validate", str(path), "--columns", "quesion=query_text,qid=query_id"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "column 'quesion'" in err and "did you mean 'question'" in err
    assert main(["validate", str(path), "--columns", "question=query_txt"]) == 2
    assert "did you mean 'query_text'" in capsys.readouterr().err
    assert main(["validate", str(path), "--columns", "qid=prompt_id"]) == 2
    assert "already has a 'prompt_id' column" in capsys.readouterr().err


def test_the_columns_flag_is_on_every_command_that_reads_a_table(capsys):
    for command in COMMANDS:
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "--columns" in capsys.readouterr().out, command


def test_queries_with_their_own_column_names_and_no_ids(tmp_path):
    from cpo_engine.data.queries import read_queries, scan_queries

    path = tmp_path / "q.csv"
    pacsv.write_csv(pa.table({"question": ["2+2?", "3+3?"], "note": ["a", "b"]}), path)
    q = read_queries(str(path), {"question": "query_text", "answer_score": "score"})  # a triplet mapping works too
    assert q.column_names == ["query_id", "query_text"] and q.column("query_text").to_pylist() == ["2+2?", "3+3?"]
    assert q.column("query_id").to_pylist()[0].startswith("q-")
    assert scan_queries(str(path), columns="question=query_text")[0] == 2
