"""The triplet contract: readers round-trip, and every bad input gets its specific message."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from cpo_engine.cli import main
from cpo_engine.data import load_example, read_triplets, validate_triplets
from cpo_engine.exceptions import DataError


def _write(table: pa.Table, path: Path) -> Path:
    if path.suffix == ".parquet":
        pq.write_table(table, path)
    elif path.suffix == ".csv":
        pacsv.write_csv(table, path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in table.to_pylist()))
    return path


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_reader_round_trip(tiny_table, tmp_path, suffix):
    out = read_triplets(_write(tiny_table, tmp_path / f"t{suffix}"))
    assert out.select(tiny_table.column_names).to_pylist() == tiny_table.to_pylist()
    assert out.schema.field("score").type == pa.float64()


def test_reader_folder_of_shards(tiny_table, tmp_path):
    (tmp_path / "shards").mkdir()
    pq.write_table(tiny_table.slice(0, 3), tmp_path / "shards" / "part-0.parquet")
    pq.write_table(tiny_table.slice(3), tmp_path / "shards" / "part-1.parquet")
    assert read_triplets(tmp_path / "shards").num_rows == 6


def test_extra_and_optional_columns_kept(tiny_table):
    t = tiny_table.append_column("task", pa.array(["math"] * 6)).append_column("my_note", pa.array(list("abcdef")))
    out = validate_triplets(t.append_column("sample", pa.array([0] * 6, pa.int32())))
    assert out.column_names[:5] == ["query_id", "query_text", "prompt_id", "prompt_text", "score"]
    assert "my_note" in out.column_names and out.schema.field("sample").type == pa.int64()


def test_integer_ids_become_strings(tiny_table):
    t = tiny_table.set_column(0, "query_id", pa.array([1, 1, 2, 2, 3, 3]))
    assert validate_triplets(t)["query_id"].to_pylist()[:2] == ["1", "1"]


def _replace(t: pa.Table, col: str, values) -> pa.Table:
    return t.set_column(t.column_names.index(col), col, pa.array(values))


BAD_INPUTS = {
    "missing_column": (lambda t: t.rename_columns(["query_id", "question", "prompt_id", "prompt_text", "score"]),
                       ["missing required column", "'query_text'", "did you mean 'question'"]),
    "misnamed_score": (lambda t: t.rename_columns(["query_id", "query_text", "prompt_id", "prompt_text", "reward"]),
                       ["'score'", "did you mean 'reward'"]),
    "wrong_type_score": (lambda t: _replace(t, "score", ["yes", "1", "0", "1", "0", "1"]),
                         ["column 'score'", "must be a number", "rows 0", "'yes'"]),
    "wrong_type_text": (lambda t: _replace(t, "query_text", [1.5] * 6), ["column 'query_text'", "must hold text"]),
    "nan_score": (lambda t: _replace(t, "score", [1.0, np.nan, 0.0, 1.0, 0.0, 1.0]),
                  ["column 'score'", "rows 1", "NaN or infinite"]),
    "inf_score": (lambda t: _replace(t, "score", [1.0, 1.0, 0.0, np.inf, 0.0, 1.0]), ["rows 3", "NaN or infinite"]),
    "empty": (lambda t: t.slice(0, 0), ["has no rows"]),
    "query_two_texts": (lambda t: _replace(t, "query_text", ["What is 2+2?", "What is 3+3?"] + t["query_text"].to_pylist()[2:]),
                        ["column 'query_id'", "'q1' has 2 texts", "rows 0, 1"]),
    "prompt_two_texts": (lambda t: _replace(t, "prompt_text", ["The answer is:", "Let's think step by step:"] * 2
                                            + ["The answer:", "Let's think step by step:"]),
                         ["column 'prompt_id'", "more than one prompt_text", "'plain' has 2 texts"]),
    "single_prompt": (lambda t: t.filter(pa.array([True, False] * 3)), ["only one distinct prompt", "'plain'"]),
    "single_query": (lambda t: t.slice(0, 2), ["only one distinct query", "'q1'"]),
    "duplicate_rows": (lambda t: pa.concat_tables([t, t.slice(2, 1)]), ["rows 2, 6", "exact duplicates"]),
    "null_id": (lambda t: _replace(t, "prompt_id", ["plain", None, "plain", "cot", "plain", "cot"]),
                ["column 'prompt_id'", "missing value", "rows 1"]),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_message(tiny_table, tmp_path, capsys, name):
    make, expected = BAD_INPUTS[name]
    path = _write(make(tiny_table), tmp_path / f"{name}.parquet")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "fix:" in err and "Traceback" not in err
    for fragment in expected:
        assert fragment in err, f"{fragment!r} not in {err!r}"


def test_duplicate_samples_keyed_by_sample_column(tiny_table):
    t = pa.concat_tables([tiny_table, tiny_table]).append_column("sample", pa.array([0] * 6 + [1] * 6))
    assert validate_triplets(t).num_rows == 12  # repeated samples of a cell are fine when numbered
    with pytest.raises(DataError, match=r"same \(query_id, prompt_id, sample\)"):
        validate_triplets(t.set_column(5, "sample", pa.array([0] * 12)))


def test_bad_propensity(tiny_table):
    with pytest.raises(DataError, match=r"column 'propensity'.*rows 2.*\(0, 1\]"):
        validate_triplets(tiny_table.append_column("propensity", pa.array([0.5, 0.5, 0.0, 0.5, 0.5, 0.5])))


def test_undecodable_csv(tmp_path, capsys):
    path = tmp_path / "latin1.csv"
    path.write_bytes("query_id,query_text,prompt_id,prompt_text,score\nq1,caf\xe9 prices,p,x,1\n".encode("latin-1"))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "column 'query_text', rows 0" in err and "not valid UTF-8" in err and "re-encode" in err


def test_undecodable_binary_column(tiny_table, tmp_path, capsys):
    texts = [t.encode() for t in tiny_table["query_text"].to_pylist()]
    texts[4] = texts[5] = b"caf\xe9"
    path = _write(_replace(tiny_table, "query_text", pa.array(texts, pa.binary())), tmp_path / "bin.parquet")
    assert main(["validate", str(path)]) == 2
    assert "undecodable text" in (err := capsys.readouterr().err) and "rows 4, 5" in err


@pytest.mark.parametrize("kind", ["missing", "not_a_table", "empty_folder", "corrupt_parquet"])
def test_bad_paths(tmp_path, capsys, kind):
    path = {"missing": tmp_path / "nope.parquet", "not_a_table": tmp_path / "notes.txt",
            "empty_folder": tmp_path / "empty", "corrupt_parquet": tmp_path / "bad.parquet"}[kind]
    if kind == "not_a_table":
        path.write_text("hello")
    elif kind == "empty_folder":
        path.mkdir()
    elif kind == "corrupt_parquet":
        path.write_bytes(b"PAR1 not really parquet")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    message = {"missing": "does not exist", "not_a_table": "not a table format", "empty_folder": "no .parquet shards",
               "corrupt_parquet": "cannot read it as parquet"}[kind]
    assert message in err and str(path) in err and "Traceback" not in err


def test_bundled_example_is_a_full_grid():
    t = load_example()
    cells = t.group_by(["query_id", "prompt_id"]).aggregate([("score", "mean")])
    n_q, n_p = len(set(t["query_id"].to_pylist())), len(set(t["prompt_id"].to_pylist()))
    assert n_p == 16 and cells.num_rows == n_q * n_p and set(t["task"].to_pylist()) == {"svamp", "mawps"}


def test_validate_cli_summary(capsys):
    from cpo_engine.data import example_path

    assert main(["validate", str(example_path())]) == 0
    assert "16 prompts" in capsys.readouterr().out


def test_two_models_on_the_same_cells_are_not_duplicates(tiny_table):
    both = pa.concat_tables([tiny_table.append_column("model", pa.array(["a"] * 6)),
                             tiny_table.append_column("model", pa.array(["b"] * 6))])
    assert validate_triplets(both.append_column("sample", pa.array([0] * 12))).num_rows == 12


def test_undecodable_jsonl(tmp_path, capsys):
    # pyarrow's JSON reader keeps invalid UTF-8 inside string columns; the validator must catch it.
    path = tmp_path / "latin1.jsonl"
    rows = [b'{"query_id":"q1","query_text":"caf\xe9","prompt_id":"p","prompt_text":"x","score":1}',
            b'{"query_id":"q2","query_text":"tea","prompt_id":"p2","prompt_text":"y","score":0}']
    path.write_bytes(b"\n".join(rows) + b"\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "column 'query_text', rows 0" in err and "not valid UTF-8" in err


def test_duplicated_rows_packed_and_wide_keys_agree():
    from cpo_engine.data.validate import _duplicated_rows

    rng = np.random.default_rng(0)
    n = 5_000
    keys = pa.table({"query_id": pa.array([f"q{i}" for i in rng.integers(0, 900, n)]),
                     "prompt_id": pa.array(rng.integers(0, 7, n)),
                     "sample": pa.array([None if i % 97 == 0 else int(v) for i, v in enumerate(rng.integers(0, 3, n))],
                                        pa.int64())})
    cols = [keys.column(c).to_pylist() for c in keys.column_names]
    seen: dict = {}
    for i, k in enumerate(zip(*cols)):
        seen.setdefault(k, []).append(i)
    expect = sorted(i for rows in seen.values() if len(rows) > 1 for i in rows)
    assert expect and _duplicated_rows(keys) == expect          # packed int64 keys (nulls are a value)
    wide = keys.append_column("run_id", pa.array([f"r{i}" for i in range(n)]))  # every row its own key
    wide = pa.table({f"c{j}": wide.column("run_id") for j in range(6)})  # radix product 5000**6 > 2**62: renumbered
    assert _duplicated_rows(wide) == []
    wide = pa.concat_tables([wide, wide.slice(10, 1)])
    assert _duplicated_rows(wide) == [10, n]
    ids = [None if i % 2 else f"r{i}" for i in range(n)]  # nulls repeat on the wide path too
    wide = pa.table({**{f"c{j}": pa.array([f"r{i}" for i in range(n)]) for j in range(5)}, "c5": pa.array(ids)})
    wide = pa.concat_tables([wide, wide.slice(11, 1), wide.slice(12, 1)])
    assert _duplicated_rows(wide) == [11, 12, n, n + 1]


@pytest.mark.parametrize("text, blank", [("", True), (" \t\n", True), ("\u00a0\u3000", True), ("\x0b\x85\u2028", True),
                                         ("\u200b", False), (" a ", False), ("\u00a0x", False), ("é", False)])
def test_blank_query_text_means_only_unicode_whitespace(tiny_table, text, blank):
    t = tiny_table.set_column(tiny_table.column_names.index("query_text"), "query_text",
                              pa.array([text] + tiny_table.column("query_text").to_pylist()[1:]))
    q = t.column("query_id").to_pylist()
    t = t.set_column(t.column_names.index("query_id"), "query_id", pa.array(["blank_q"] + q[1:]))
    if blank:
        with pytest.raises(DataError, match="empty or whitespace-only"):
            validate_triplets(t)
    else:
        validate_triplets(t)
