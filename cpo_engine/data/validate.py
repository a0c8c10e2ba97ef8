"""The triplet validator: every check names the source, column, first offending rows and a fix.

Scores are any finite numbers: 0/1 correctness, rates in [0, 1], and continuous grades such as a
rubric 1-5 or BLEU 0-100 are all valid. An empty ``prompt_text`` is valid too (the no-instruction
baseline: the query alone); an empty ``query_text`` is not. Every estimate the engine reports (effects, uplift, intervals)
is in the score's own units; nothing assumes [0, 1] (:func:`score_scale` says which case a table is).
"""

from __future__ import annotations

import difflib
import os
import warnings
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cpo_engine.data.io import as_table, is_table_like, read_table
from cpo_engine.data.schema import ALIASES, ID_COLUMNS, OPTIONAL, REQUIRED, TEXT_COLUMNS
from cpo_engine.exceptions import DataError, DataWarning

_ROWS_NOTE = "(row numbers count data rows from 0)"


def read_triplets(data: Any, columns: dict[str, str] | str | None = None, score_field: str | None = None) -> pa.Table:
    """Read and validate a triplet table: a path or URI (Parquet file or folder, CSV/TSV, JSONL, chat-format
    JSONL) or a table in memory (pyarrow Table, pandas DataFrame; see :func:`~cpo_engine.data.io.as_table`).
    ``columns`` maps the table's column names to ours and ids absent are derived from the texts
    (:func:`~cpo_engine.data.columns.apply_columns`); ``score_field`` names a chat log's score field."""
    from cpo_engine.data.columns import apply_columns, parse_columns

    columns = parse_columns(columns)
    if is_table_like(data):  # an InMemoryTable (a config's table) is a str too: checked first
        source = str(data) if isinstance(data, str) else "<table>"
        return validate_triplets(apply_columns(as_table(data, source), columns, source), source=source)
    source = str(data)
    return validate_triplets(apply_columns(read_table(data, score_field, columns), columns, source), source=source)


def validate_triplets(table: Any, source: str = "<table>") -> pa.Table:
    """Check a table against the triplet contract and return it normalized as a ``pyarrow.Table``.

    ``table`` is a pyarrow Table, a pandas DataFrame (or another dataframe that exports Arrow) or a
    path; it is converted once (:func:`~cpo_engine.data.io.as_table`). Required columns are cast to their
    contract types (ids to string, score to float64) and put first; optional columns are cast when
    present; other columns are kept unchanged.

    Raises
    ------
    DataError
        On the first problem found, with where it is and how to fix it.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"query_id": ["q1", "q1", "q2", "q2"], "query_text": ["2+2?", "2+2?", "3+3?", "3+3?"],
    ...                    "prompt_id": ["plain", "cot"] * 2, "prompt_text": ["Answer:", "Think step by step:"] * 2,
    ...                    "score": [1, 1, 0, 1]})
    >>> validate_triplets(df).schema.field("score").type
    DataType(double)
    """
    if isinstance(table, (str, os.PathLike)) and source == "<table>":
        source = str(table)  # the path (or an InMemoryTable's description)
    table = as_table(table, source)
    if table.num_rows == 0:
        raise DataError("the table has no rows", source=source, fix="pass a table with at least one triplet")
    _check_columns(table, source)
    table = _cast_required(table, source)
    table = _cast_optional(table, source)
    for col in REQUIRED:
        _check_no_nulls(table, col, source)
    for col in ID_COLUMNS:
        warn_missing_like_ids(table, col, source)
    _check_not_blank(table, "query_text", source)  # an empty prompt_text is valid: the no-instruction baseline
    _check_finite_scores(table, source)
    for id_col, text_col in zip(ID_COLUMNS, TEXT_COLUMNS):
        _check_one_text_per_id(table, id_col, text_col, source)
    _check_variety(table, source)
    _check_duplicates(table, source)
    _check_optional_ranges(table, source)
    ordered = list(REQUIRED) + [c for c in OPTIONAL if c in table.column_names]
    return table.select(ordered + [c for c in table.column_names if c not in ordered])


def _check_columns(table: pa.Table, source: str) -> None:
    present = table.column_names
    repeated = sorted({c for c in present if present.count(c) > 1})
    if repeated:  # table.column(name) cannot tell them apart (it raised KeyError)
        raise DataError(f"column name(s) {', '.join(repr(c) for c in repeated)} appear more than once; found "
                        f"columns: {', '.join(present)}", source=source, column=repeated[0],
                        fix="keep one column of each name: drop or rename the repeats")
    missing = [c for c in REQUIRED if c not in present]
    if not missing:
        return
    hints = []
    for col in missing:
        guess = _closest(col, present)
        hints.append(f"'{col}'" + (f" (did you mean '{guess}'? rename it to '{col}' or map it: --columns "
                                   f"{guess}={col})" if guess else ""))
    raise DataError(
        f"missing required column(s): {', '.join(hints)}; found columns: {', '.join(present)}",
        source=source, column=missing[0],
        fix="a triplet table needs columns query_id, query_text, prompt_id, prompt_text, score (ids may be left "
            "out: they are derived from the texts); map your names with --columns THEIRS=OURS,... (data.columns)",
    )


def _closest(col: str, present: list[str]) -> str | None:
    lowered = {c.lower().strip(): c for c in present}
    for alias in (col, *ALIASES.get(col, ())):
        if alias in lowered and lowered[alias] not in REQUIRED:
            return lowered[alias]
    # keyed like `lowered` (a name with stray spaces, 'query_id ', used to raise KeyError here)
    candidates = {c.lower().strip(): c for c in present if c not in REQUIRED}
    match = difflib.get_close_matches(col.lower(), list(candidates), n=1, cutoff=0.6)
    return candidates[match[0]] if match else None


def _cast_required(table: pa.Table, source: str) -> pa.Table:
    for col in ("query_id", "prompt_id"):
        table = _set(table, col, _cast_id(table, col, source))
    for col in TEXT_COLUMNS:
        table = _set(table, col, _cast_text(table, col, source))
    return _set(table, "score", _cast_score(table, source))


def _set(table: pa.Table, col: str, arr: pa.ChunkedArray) -> pa.Table:
    return table.set_column(table.column_names.index(col), col, arr)


def _cast_id(table: pa.Table, col: str, source: str) -> pa.ChunkedArray:
    arr = table.column(col)
    t = arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t) or pa.types.is_dictionary(t):
        return _valid_utf8(pc.cast(arr, pa.string()), col, source)
    raise DataError(f"ids must be strings or integers, got {t}", source=source, column=col,
                    fix=f"store '{col}' as text (e.g. 'q001') or integers")


def _cast_text(table: pa.Table, col: str, source: str) -> pa.ChunkedArray:
    arr = table.column(col)
    t = arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t):
        return _valid_utf8(pc.cast(arr, pa.string()), col, source)
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return _decode_binary(arr, col, source)
    raise DataError(f"must hold text, got {t}", source=source, column=col,
                    fix=f"store '{col}' as UTF-8 strings")


def _valid_utf8(arr: pa.ChunkedArray, col: str, source: str) -> pa.ChunkedArray:
    """String columns from lenient writers (and pyarrow's JSON reader) may hold invalid UTF-8."""
    try:
        arr.validate(full=True)
    except pa.ArrowInvalid:
        _decode_binary(pc.cast(arr, pa.binary()), col, source)  # raises, naming the rows
    return arr


def _decode_binary(arr: pa.ChunkedArray, col: str, source: str) -> pa.ChunkedArray:
    values = arr.to_pylist()
    bad = []
    out = []
    for i, v in enumerate(values):
        try:
            out.append(None if v is None else v.decode("utf-8"))
        except UnicodeDecodeError:
            bad.append(i)
    if bad:
        raise DataError(f"undecodable text: not valid UTF-8 {_ROWS_NOTE}", source=source, column=col, rows=bad,
                        fix="re-encode the text as UTF-8 before writing the table")
    return pa.chunked_array([pa.array(out, pa.string())])


def _cast_score(table: pa.Table, source: str) -> pa.ChunkedArray:
    arr = table.column("score")
    t = arr.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t):
        return pc.cast(arr, pa.float64())
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return _parse_scores(arr, source)
    raise DataError(f"score must be numeric (0/1, a float) or boolean, got {t}", source=source, column="score",
                    fix="store the graded score as a number")


def _parse_scores(arr: pa.ChunkedArray, source: str) -> pa.ChunkedArray:
    words = {"true": 1.0, "false": 0.0}
    out, bad = [], []
    for i, v in enumerate(arr.to_pylist()):
        if v is None or v.strip() == "":
            out.append(None)
            continue
        try:
            out.append(words[v.strip().lower()] if v.strip().lower() in words else float(v))
        except ValueError:
            bad.append(i)
    if bad:
        example = arr[bad[0]].as_py()
        raise DataError(f"score must be a number, found text such as '{example}' {_ROWS_NOTE}", source=source,
                        column="score", rows=bad, fix="grade answers into numbers (e.g. 1 correct, 0 wrong)")
    return pa.chunked_array([pa.array(out, pa.float64())])


def _cast_optional(table: pa.Table, source: str) -> pa.Table:
    for col, typ in OPTIONAL.items():
        if col not in table.column_names:
            continue
        try:
            table = _set(table, col, pc.cast(table.column(col), typ))
        except pa.ArrowException as exc:  # invalid, unsupported or mismatched type casts
            raise DataError(f"cannot be read as {typ}: {str(exc).splitlines()[0]}", source=source, column=col,
                            fix=f"store '{col}' as {typ} or drop the column") from exc
    return table


def _rows(mask: pa.ChunkedArray | np.ndarray) -> list[int]:
    m = mask.to_numpy(zero_copy_only=False) if not isinstance(mask, np.ndarray) else mask
    return np.flatnonzero(m).tolist()


def _check_no_nulls(table: pa.Table, col: str, source: str) -> None:
    arr = table.column(col)
    if arr.null_count:
        raise DataError(f"{arr.null_count} missing value(s) {_ROWS_NOTE}", source=source, column=col,
                        rows=_rows(pc.is_null(arr)), fix=f"fill or drop the rows with an empty '{col}'")


#: Id values that are almost always a missing value written out as text by some tool (pandas writes NaN
#: as 'nan', Python None as 'None', SQL NULL as 'NULL'), not a name someone chose.
MISSING_LIKE = ("", "nan", "none", "null", "na", "n/a", "<na>", "nat", "undefined")


def warn_missing_like_ids(table: pa.Table, col: str, source: str, offset: int = 0) -> bool:
    """Warn (:class:`~cpo_engine.exceptions.DataWarning`) when ids in ``col`` read as a missing value:
    they are valid, but reports and assignments would show e.g. 'nan' as the best prompt. ``offset``
    numbers the rows of a batch from the start of its input. Returns whether it warned."""
    norm = pc.utf8_lower(pc.utf8_trim_whitespace(table.column(col)))
    bad = pc.fill_null(pc.is_in(norm, pa.array(MISSING_LIKE)), False)
    rows = [offset + r for r in _rows(bad)]
    if not rows:
        return False
    values = sorted({repr(v) for v in pc.unique(pc.filter(table.column(col), bad)).to_pylist()})
    more = f" (and {len(rows) - 5} more)" if len(rows) > 5 else ""
    warnings.warn(f"in {source}, column '{col}': {len(rows)} row(s) have ids that read as missing "
                  f"({', '.join(values)}), rows {', '.join(map(str, rows[:5]))}{more} {_ROWS_NOTE}. They are kept, "
                  f"but outputs will name them so; fix: give them real ids (e.g. 'plain' for a bare answer trigger), "
                  f"or fill the missing values before writing the table", DataWarning, stacklevel=3)
    return True


_BLANK = r"^[\s\x0b\x{85}\p{Z}]*$"  # empty or only whitespace (Unicode White_Space)


def _check_not_blank(table: pa.Table, col: str, source: str) -> None:
    """A query with no text is a lost question (every such query would embed to the same point)."""
    # One regex test per row (what utf8_trim_whitespace would leave empty: ASCII and Unicode White_Space),
    # instead of a trimmed copy of the whole column (1 GB at 10M rows of 100-character questions).
    blank = pc.match_substring_regex(table.column(col), _BLANK)
    n = pc.sum(blank).as_py() or 0
    if n:
        raise DataError(f"{n} empty or whitespace-only text(s) {_ROWS_NOTE}", source=source, column=col,
                        rows=_rows(blank), fix="fill in the text of these queries or drop their rows")


def _check_finite_scores(table: pa.Table, source: str) -> None:
    y = table.column("score").to_numpy()
    bad = ~np.isfinite(y)
    if bad.any():
        raise DataError(f"{int(bad.sum())} score(s) are NaN or infinite {_ROWS_NOTE}", source=source, column="score",
                        rows=_rows(bad), fix="drop ungraded rows or grade them; scores must be finite numbers")


def _check_one_text_per_id(table: pa.Table, id_col: str, text_col: str, source: str) -> None:
    counts = table.group_by(id_col).aggregate([(text_col, "count_distinct")])
    multi = pc.filter(counts, pc.greater(counts.column(f"{text_col}_count_distinct"), 1))
    if multi.num_rows == 0:
        return
    bad_id = multi.column(id_col)[0].as_py()
    rows = _rows(pc.equal(table.column(id_col), bad_id))
    texts = pc.unique(pc.filter(table.column(text_col), pc.equal(table.column(id_col), bad_id))).to_pylist()
    shown = " / ".join(repr(t[:60]) for t in texts[:2])
    raise DataError(
        f"{multi.num_rows} {id_col}(s) map to more than one {text_col}; '{bad_id}' has {len(texts)} texts "
        f"({shown}) {_ROWS_NOTE}", source=source, column=id_col, rows=rows,
        fix=f"give every distinct {text_col} its own {id_col}, or make the texts identical",
    )


def _check_variety(table: pa.Table, source: str) -> None:
    for col, what in (("prompt_id", "prompt"), ("query_id", "query")):
        n = len(pc.unique(table.column(col)))
        if n < 2:
            raise DataError(f"only one distinct {what} ('{table.column(col)[0].as_py()}'): there is nothing to learn "
                            f"about which {'prompt works best' if what == 'prompt' else 'query needs which prompt'}",
                            source=source, column=col,
                            fix=f"include at least two different {what}s (prompt effects need contrasts)")


def _check_duplicates(table: pa.Table, source: str) -> None:
    keyed = "sample" in table.column_names
    # Several models (or runs) may answer the same cell with the same sample number.
    cols = [c for c in ("run_id", "model", "query_id", "prompt_id", "sample") if c in table.column_names] if keyed else [
        c for c in table.column_names if not _unhashable(table.schema.field(c).type)]
    rows = _duplicated_rows(table.select(cols))
    if not rows:
        return
    what = f"the same ({', '.join(cols)})" if keyed else "exact duplicates of other rows"
    fix = ("number repeated samples of a cell 0, 1, 2, ... in 'sample', or drop the repeats" if keyed else
           "drop the duplicated rows, or add a 'sample' column numbering repeated answers to the same cell")
    raise DataError(f"{len(rows)} rows are {what} {_ROWS_NOTE}", source=source,
                    column="sample" if keyed else None, rows=rows, fix=fix)


def _duplicated_rows(keys: pa.Table) -> list[int]:
    """Rows whose values in every column of ``keys`` repeat another row's, in order (nulls are a value).

    Each column is dictionary-encoded (one hash pass) and the codes are packed into one int64 per row,
    so finding repeats is a sort of integers (no per-group lists: a 10M-row table checks in seconds).
    Before a column would overflow the packed key, the key is renumbered densely (at most one code per
    row), so any number of columns packs."""
    key = np.zeros(keys.num_rows, dtype=np.int64)
    for name in keys.column_names:
        enc = pc.dictionary_encode(keys.column(name), null_encoding="encode").combine_chunks()
        radix = max(len(enc.dictionary), 1)
        if keys.num_rows and (int(key.max()) + 1) * radix >= 2**62:
            key = np.unique(key, return_inverse=True)[1].astype(np.int64)
        key = key * radix + enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    ordered = np.sort(key)
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    return np.flatnonzero(np.isin(key, repeated)).tolist() if len(repeated) else []


def _unhashable(t: pa.DataType) -> bool:
    return pa.types.is_nested(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t)


def _check_optional_ranges(table: pa.Table, source: str) -> None:
    checks = {
        "propensity": (lambda p: ~((p > 0) & (p <= 1)), "must be in (0, 1]", "store the logging probability of each row"),
        "weight": (lambda w: ~(np.isfinite(w) & (w >= 0)), "must be finite and >= 0", "use non-negative row weights"),
    }
    for col, (is_bad, rule, fix) in checks.items():
        if col in table.column_names:
            values = table.column(col).to_numpy(zero_copy_only=False).astype(float)
            bad = is_bad(values)  # NaN fails both rules
            if bad.any():
                raise DataError(f"{int(bad.sum())} value(s) {rule} {_ROWS_NOTE}", source=source, column=col,
                                rows=_rows(bad), fix=fix)
    if "weight" in table.column_names and not pc.max(table.column("weight")).as_py() > 0:
        raise DataError("every weight is 0: no row would count in any fit", source=source, column="weight",
                        fix="give the rows that should count a positive weight, or drop the weight column")


def score_scale(table: pa.Table) -> dict[str, float | str]:
    """What kind of scores a validated table holds: ``kind`` is 'binary' (only 0 and 1), 'unit' (within
    [0, 1]) or 'continuous' (anything else, e.g. a rubric 1-5), with ``min``, ``max`` and ``range``."""
    y = table.column("score").to_numpy(zero_copy_only=False).astype(float)
    lo, hi = float(y.min()), float(y.max())
    kind = "binary" if np.isin(y, (0.0, 1.0)).all() else "unit" if lo >= 0 and hi <= 1 else "continuous"
    return {"kind": kind, "min": lo, "max": hi, "range": hi - lo}


__all__ = ["read_triplets", "validate_triplets", "warn_missing_like_ids", "MISSING_LIKE", "score_scale"]
