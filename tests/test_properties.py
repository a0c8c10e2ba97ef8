"""Property-based tests (hypothesis) of the data contract and of `cpo assign`'s input: any table, in any
format, with any damage (missing or renamed columns, wrong or mixed types, nulls, NaN/inf scores, empty
strings, duplicate rows, no rows, bytes that are not UTF-8, propensity outside (0, 1], a cut-off file ...)
either loads into a well-formed table or is refused with a DataError that names the file and a fix; through
the CLI, a refusal is exit 2 with that message, and nothing half-written is left behind.

Deterministic (``derandomize=True``, no example database, no global profile) and small: the file runs in
about 20 s on two shared cores.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cpo_engine.data.queries import read_queries, scan_queries
from cpo_engine.data.schema import REQUIRED
from cpo_engine.data.validate import MISSING_LIKE, read_triplets
from cpo_engine.exceptions import ConfigError, DataError, DataWarning

_BASE = settings(derandomize=True, database=None, deadline=None, print_blob=False,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def examples(n: int) -> settings:
    """Deterministic settings (no example database, no global profile) with ``n`` examples."""
    return settings(_BASE, max_examples=n)

FORMATS = ("parquet", "csv", "jsonl")
TRIPLET_COLUMNS = tuple(REQUIRED)
QUERY_COLUMNS = ("query_id", "query_text")
OPTIONAL_COLUMNS = ("propensity", "weight", "sample", "task", "model", "run_id", "logged_at")
NOT_UTF8 = (b"caf\xe9", b"\xff\xfe", b"ok\x80")  # Latin-1 / stray bytes; no quote or backslash in them

# Cells: a few values that collide on purpose (repeated ids, ids that read as missing, separators and
# quotes for CSV), numbers of every kind, nulls, booleans and bytes that are not UTF-8.
_words = st.sampled_from(["q1", "q2", "p1", "p2", "a", "", " ", "nan", "None", "007", "x,y", 'say "hi"',
                          "two\nlines", "é", "1", "0.5", "true", "2024-01-01"])
_numbers = st.one_of(st.integers(-3, 3), st.sampled_from([0.0, 0.5, 1.0, 1.5, -0.1, math.nan, math.inf, -math.inf]),
                     st.floats(allow_nan=True, allow_infinity=True, width=32))
CELL = st.one_of(_words, st.text(max_size=4), _numbers, st.none(), st.booleans(), st.sampled_from(NOT_UTF8))


# ------------------------------------------------------------------------------------------- tables


@st.composite
def triplet_rows(draw: Any) -> list[dict[str, Any]]:
    """A valid triplet table (every query crossed with every prompt), as rows of Python values."""
    n_q, n_p = draw(st.integers(2, 3)), draw(st.integers(2, 3))
    rows = []
    for q in range(n_q):
        for p in range(n_p):
            rows.append({"query_id": f"q{q}", "query_text": f"What is {q} + {q}?", "prompt_id": f"p{p}",
                         "prompt_text": ["", "Think step by step.", "Answer briefly."][p],
                         "score": draw(st.sampled_from([0.0, 1.0, 0.25, 3.0]))})
    return rows


@st.composite
def query_rows(draw: Any) -> list[dict[str, Any]]:
    """A valid queries table for `cpo assign`, with an unrelated column."""
    n = draw(st.integers(1, 5))
    return [{"query_id": f"q{i}", "query_text": f"question {i}", "other": i} for i in range(n)]


@st.composite
def damaged(draw: Any, rows_strategy: Any, columns: tuple[str, ...], min_damage: int = 0) -> dict[str, Any]:
    """A table (rows + column order) with 0-3 random damages, a format and maybe a cut-off file."""
    rows = draw(rows_strategy)
    names = list(rows[0])
    for _ in range(draw(st.integers(min_damage, 3))):
        kind = draw(st.sampled_from(["drop", "rename", "cell", "column", "dup", "cut", "optional", "null",
                                     "repeat"]))
        col = draw(st.sampled_from(names)) if names else None
        if kind == "drop" and col is not None:
            names.remove(col)
        elif kind == "rename" and col is not None:
            new = draw(st.sampled_from(["query", "question", "id", "prompt", "reward", "Score", "query_id ", "",
                                        *NOT_UTF8, *columns]))
            names = [new if n == col else n for n in names if n != new or n == col]
            rows = [{(new if k == col else k): v for k, v in r.items()} for r in rows]
        elif kind == "cell" and col is not None and rows:
            i = draw(st.integers(0, len(rows) - 1))
            rows[i] = {**rows[i], col: draw(CELL)}
        elif kind == "column" and col is not None:  # a whole column of another (maybe mixed) type
            rows = [{**r, col: draw(CELL)} for r in rows]
        elif kind == "null" and col is not None:
            rows = [{**r, col: None} for r in rows]
        elif kind == "repeat" and col is not None:  # a second column of the same name
            names.append(col)
        elif kind == "dup" and rows:
            rows.append(dict(rows[draw(st.integers(0, len(rows) - 1))]))
        elif kind == "cut":
            rows = rows[:draw(st.integers(0, len(rows)))]
        elif kind == "optional":
            opt = draw(st.sampled_from(OPTIONAL_COLUMNS))
            values = st.one_of(CELL, st.floats(0, 1.5)) if opt in ("propensity", "weight") else CELL
            if opt not in names:
                names.append(opt)
            rows = [{**r, opt: draw(values)} for r in rows]
    return {"rows": rows, "names": names, "format": draw(st.sampled_from(FORMATS)),
            "cut_bytes": draw(st.one_of(st.none(), st.none(), st.integers(0, 40)))}


def write(table: dict[str, Any], folder: Path) -> Path:
    """The table on disk in its format (the file cut to ``cut_bytes`` when set)."""
    rows, names, fmt = table["rows"], table["names"], table["format"]
    path = folder / f"table.{fmt}"
    if fmt == "parquet":  # a name that is not UTF-8 is written as its Latin-1 reading
        pq.write_table(pa.Table.from_arrays([_column([r.get(n) for r in rows]) for n in names],
                                            names=[n.decode("latin-1") if isinstance(n, bytes) else n
                                                   for n in names]), path)
    elif fmt == "csv":
        lines = [b",".join(_csv_cell(n) for n in names)] + [b",".join(_csv_cell(r.get(n)) for n in names)
                                                            for r in rows]
        path.write_bytes(b"\n".join(lines) + (b"\n" if names else b""))
    else:
        path.write_bytes(b"".join(b"{" + b", ".join(_json_cell(n) + b": " + _json_cell(r.get(n))
                                                   for n in names) + b"}\n" for r in rows))
    if table["cut_bytes"] is not None:
        data = path.read_bytes()
        path.write_bytes(data[:table["cut_bytes"]])
    return path


def _column(values: list[Any]) -> pa.Array:
    """One Parquet column: the values' own type when they share one, else text (bytes: binary)."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        if any(isinstance(v, bytes) for v in values):
            return pa.array([v if isinstance(v, bytes) or v is None else str(v).encode() for v in values])
        return pa.array([None if v is None else str(v) for v in values])


def _csv_cell(v: Any) -> bytes:
    if v is None:
        return b""
    raw = v if isinstance(v, bytes) else (str(v).lower() if isinstance(v, bool) else str(v)).encode()
    return b'"' + raw.replace(b'"', b'""') + b'"'


def _json_cell(v: Any) -> bytes:
    return b'"' + v + b'"' if isinstance(v, bytes) else json.dumps(v).encode()  # NaN/Infinity: not JSON


def assert_clear_refusal(exc: BaseException, path: Path) -> None:
    """A refusal the user can act on: the engine's error type, naming the file, with a fix."""
    assert isinstance(exc, (DataError, ConfigError)), repr(exc)
    msg = str(exc)
    assert str(path) in msg, msg
    assert "fix:" in msg, msg


# ----------------------------------------------------------------------------------- the data contract


def load_triplets(path: Path) -> pa.Table | None:
    """read_triplets' table, or None after checking its refusal (any other exception fails the test)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)
            return read_triplets(path)
    except (DataError, ConfigError) as exc:
        assert_clear_refusal(exc, path)
        event(f"refused: {getattr(exc, 'column', None)}")
        return None


@examples(300)
@given(damaged(triplet_rows(), TRIPLET_COLUMNS))
def test_any_triplet_table_loads_well_formed_or_is_refused_clearly(table):
    with tempfile.TemporaryDirectory() as tmp:
        path = write(table, Path(tmp))
        t = load_triplets(path)
        if t is None:
            return
        event("accepted")
        assert t.num_rows > 0 and t.column_names[:len(REQUIRED)] == list(REQUIRED)
        for name, typ in REQUIRED.items():
            assert t.schema.field(name).type == typ and t.column(name).null_count == 0, name
        assert np.isfinite(t.column("score").to_numpy()).all()
        assert all(s.strip() for s in t.column("query_text").to_pylist())
        if "propensity" in t.column_names:
            p = t.column("propensity").to_numpy(zero_copy_only=False)
            assert ((p > 0) & (p <= 1)).all()
        if "weight" in t.column_names:
            w = t.column("weight").to_numpy(zero_copy_only=False)
            assert (np.isfinite(w) & (w >= 0)).all() and w.max() > 0


# ---------------------------------------------------------------------------------------- assign's input


@examples(300)
@given(damaged(query_rows(), QUERY_COLUMNS))
def test_any_queries_table_scans_to_unique_ids_or_is_refused_clearly(table):
    with tempfile.TemporaryDirectory() as tmp:
        path = write(table, Path(tmp))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DataWarning)
            try:
                n, sha = scan_queries(path)
            except (DataError, ConfigError) as exc:
                assert_clear_refusal(exc, path)
                event(f"refused: {getattr(exc, 'column', None)}")
                return
            t = read_queries(path)
        event("accepted")
        ids = t.column("query_id").to_pylist()
        assert n == t.num_rows == len(ids) > 0 and len(sha) == 64
        assert all(isinstance(i, str) for i in ids) and len(set(ids)) == len(ids)
        assert t.column("query_text").null_count == 0
        assert t.column("query_text").type == pa.string()
        # ids that read as missing ('' included) are kept on purpose, but never silently
        if any(i.strip().lower() in MISSING_LIKE for i in ids):
            assert any(issubclass(w.category, DataWarning) for w in caught)


# ------------------------------------------------------------------------------------------ through the CLI


@contextlib.contextmanager
def cli() -> Any:
    """The in-process `cpo` entry point, its stderr captured; global state it sets (warnings) put back."""
    from cpo_engine.cli import main

    err = io.StringIO()
    shown = warnings.showwarning
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)
            yield main, err
    finally:
        warnings.showwarning = shown


def assert_exit_2(code: int, err: str, path: Path) -> None:
    assert code == 2, err
    assert "Traceback" not in err and "internal error" not in err, err
    assert str(path) in err and "fix:" in err, err


@examples(40)
@given(damaged(triplet_rows(), TRIPLET_COLUMNS))
def test_cpo_validate_exits_0_or_2_with_a_message(table):
    with tempfile.TemporaryDirectory() as tmp:
        path = write(table, Path(tmp))
        accepted = load_triplets(path) is not None
        with cli() as (main, err):
            code = main(["validate", str(path)])
        event(f"cpo validate: exit {code}")
        if accepted:
            assert code == 0, err.getvalue()
        else:
            assert_exit_2(code, err.getvalue(), path)


@examples(20)
@given(damaged(triplet_rows(), TRIPLET_COLUMNS, min_damage=1))
def test_cpo_run_refuses_bad_data_before_any_work_and_writes_nothing(table):
    """A refused table leaves the run folder with its failed manifest only: no summary, model, features or
    temp files, no embedding cache (the encoder is never reached)."""
    from cpo_engine.workflows.common import Representer

    with tempfile.TemporaryDirectory() as tmp:
        path = write(table, Path(tmp))
        if load_triplets(path) is not None:
            return  # valid data runs the whole pipeline: covered by the workflow tests
        out, cache = Path(tmp) / "run", Path(tmp) / "cache"

        def no_work(*args: Any, **kwargs: Any) -> None:
            raise AssertionError("the embedding started on a table the validator refuses")

        with pytest.MonkeyPatch.context() as mp, cli() as (main, err):
            mp.setattr(Representer, "represent", no_work)
            code = main(["run", "--data", str(path), "--out", str(out), "--set", "embed.device=cpu",
                         "--set", f"embed.cache_dir={cache}"])
        event("cpo run: refused")
        assert_exit_2(code, err.getvalue(), path)
        assert not cache.exists()
        assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["manifest.json"]
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["status"] == "failed" and not manifest["outputs"]
        assert not list(out.rglob("*.tmp"))


@examples(30)
@given(damaged(query_rows(), QUERY_COLUMNS, min_damage=1), st.sampled_from(["a.parquet", "a.csv", "a.jsonl", "parts"]))
def test_cpo_assign_refuses_bad_queries_with_exit_2_and_writes_nothing(table, out_name):
    """The queries are checked before the model is loaded: a model path that does not exist is never read."""
    with tempfile.TemporaryDirectory() as tmp:
        path = write(table, Path(tmp))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DataWarning)
                scan_queries(path)
            return  # valid queries need a fitted model: covered by tests/test_assign_e2e.py
        except (DataError, ConfigError):
            pass
        out = Path(tmp) / "out" / out_name
        with cli() as (main, err):
            code = main(["assign", "--model", str(Path(tmp) / "no_model"), "--queries", str(path),
                         "--out", str(out)])
        event(f"cpo assign: exit {code}")
        assert_exit_2(code, err.getvalue(), path)
        assert "no_model" not in err.getvalue()  # refused on the queries, before the model
        assert not out.exists() and not list(Path(tmp).rglob("*.tmp"))


# ------------------------------------------------------------------------- regressions the properties found


def test_a_column_name_with_stray_spaces_gets_a_hint_not_a_keyerror(tiny_table):
    """A table with 'query_id ' (trailing space) and no query_text crashed the "did you mean" hint with
    KeyError: 'query_id ' (found by test_any_triplet_table_loads_well_formed_or_is_refused_clearly)."""
    from cpo_engine.data.validate import validate_triplets

    t = tiny_table.rename_columns(["query_id", "query_id ", "prompt_id", "prompt_text", "score"])
    with pytest.raises(DataError, match=r"missing required column\(s\): 'query_text'") as exc:
        validate_triplets(t, source="t.parquet")
    assert exc.value.column == "query_text" and exc.value.fix
    t = tiny_table.rename_columns(["query_id", " Query_Text ", "prompt_id", "prompt_text", "score"])
    with pytest.raises(DataError, match=r"did you mean ' Query_Text '\? rename it to 'query_text'"):
        validate_triplets(t, source="t.parquet")


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_column_name_that_is_not_utf8_is_refused_not_a_traceback(tmp_path, fmt):
    """A Latin-1 header ('query_text\\xe9') crashed read_triplets and scan_queries with UnicodeDecodeError."""
    path = tmp_path / f"latin1.{fmt}"
    if fmt == "csv":
        path.write_bytes(b"query_id,query_text\xe9,prompt_id,prompt_text,score\nq1,a,p1,x,1\nq2,b,p2,y,0\n")
    else:
        path.write_bytes(b'{"query_id": "q1", "query_text\xe9": "a", "prompt_id": "p1", "prompt_text": "x", '
                         b'"score": 1}\n')
    for load in (read_triplets, scan_queries):
        with pytest.raises(DataError, match="column name is not valid UTF-8") as exc:
            load(path)
        assert str(path) in str(exc.value) and "iconv" in str(exc.value)


def test_a_repeated_column_name_is_refused_not_a_keyerror(tmp_path):
    """A CSV with two 'score' columns crashed read_triplets with KeyError: 'Field "score" exists 2 times'."""
    path = tmp_path / "twice.csv"
    path.write_text("query_id,query_text,prompt_id,prompt_text,score,score\nq1,a,p1,x,1,0\nq2,b,p2,y,0,1\n")
    with pytest.raises(DataError, match=r"column name\(s\) 'score' appear more than once") as exc:
        read_triplets(path)
    assert str(path) in str(exc.value) and exc.value.column == "score" and exc.value.fix
