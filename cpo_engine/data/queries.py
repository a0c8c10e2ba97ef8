"""Unscored queries: a table of ``query_id, query_text`` to assign prompts to (`cpo assign`).

Read in batches, so a file of millions of queries never sits in memory: Parquet (a file or a folder
of shards), CSV/TSV and JSONL, on a local path, an NFS mount or any file system pyarrow reaches by URI
(``s3://``, ``gs://``, ``hdfs://``). Other columns (a triplet table's prompt and score) are ignored.
"""

from __future__ import annotations

import difflib
import json
import os
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from cpo_engine.data.columns import DERIVED_IDS, user_names
from cpo_engine.data.io import CSV_SUFFIXES, JSONL_SUFFIXES, PARQUET_SUFFIXES, column_names
from cpo_engine.data.schema import ALIASES
from cpo_engine.data.storage import location
from cpo_engine.exceptions import DataError

COLUMNS = ("query_id", "query_text")
_FIX = "give a table with columns query_id and query_text (Parquet file or folder, CSV/TSV, JSONL)"


def query_dataset(path: str | os.PathLike[str], columns: dict[str, str] | None = None) -> Any:
    """A lazy ``pyarrow.dataset`` over the query table at ``path`` (file, folder of shards, or URI);
    ``columns`` (the user's names -> ours) names the columns a CSV reads as text."""
    import pyarrow.dataset as pads
    import pyarrow.fs as pafs

    fs, inner = location(path)
    info = fs.get_file_info(inner)
    if info.type == pafs.FileType.NotFound:
        raise DataError("the path does not exist", source=str(path), fix=_FIX)
    if info.type == pafs.FileType.File and info.size == 0:
        raise DataError("the file is empty (no rows): there is nothing to read", source=str(path), fix=_FIX)
    fmt = _format(str(path), fs, inner, info.type == pafs.FileType.Directory, query_columns(columns))
    try:
        return pads.dataset(inner, filesystem=fs, format=fmt, exclude_invalid_files=False,
                            ignore_prefixes=[".", "_"])
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"cannot read it as a table ({str(exc).splitlines()[0]})", source=str(path), fix=_FIX) from exc


def query_columns(columns: Any) -> dict[str, str] | None:
    """The entries of a column mapping that name a query column (a mapping written for the triplet table may
    also map its prompt and score columns, which a queries table need not have)."""
    from cpo_engine.data.columns import parse_columns

    columns = parse_columns(columns)
    return {k: v for k, v in columns.items() if v in COLUMNS} or None if columns else None


def _format(path: str, fs: Any, inner: str, is_dir: bool, columns: dict[str, str] | None = None) -> Any:
    import pyarrow.dataset as pads
    import pyarrow.fs as pafs

    name = path.rstrip("/").lower()
    if is_dir:
        files = [f.path.lower() for f in fs.get_file_info(pafs.FileSelector(inner, recursive=True))
                 if f.type == pafs.FileType.File and not f.base_name.startswith((".", "_"))]
        name = files[0] if files else ""
        if not files:
            raise DataError("the folder holds no table files", source=path, fix=_FIX)
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(CSV_SUFFIXES):
        delimiter = "\t" if name.endswith(".tsv") else ","
        # ids like "007" must stay text: every column is read as a string
        import pyarrow.csv as pacsv

        return pads.CsvFileFormat(parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
                                  convert_options=pacsv.ConvertOptions(
                                      column_types={c: pa.string() for c in user_names(columns, COLUMNS).values()},
                                      strings_can_be_null=False))
    if name.endswith(JSONL_SUFFIXES):
        return "json"
    raise DataError(f"'{os.path.basename(name)}' is not a table format cpo_engine reads", source=path, fix=_FIX)


def iter_queries(path: str | os.PathLike[str], batch_size: int = 4096,
                 columns: dict[str, str] | str | None = None) -> Iterator[pa.Table]:
    """Validated batches of ``query_id, query_text`` (in file order; ids as strings). Ids that read as
    missing ('nan', 'None', '') are warned about once. ``columns`` maps the file's column names to ours;
    without a query_id column, ids are derived from the texts (:mod:`cpo_engine.data.columns`)."""
    from cpo_engine.data.columns import apply_columns
    from cpo_engine.data.validate import warn_missing_like_ids

    columns = query_columns(columns)
    ds = query_dataset(path, columns)
    read = plan_columns(column_names(ds.schema, str(path)), columns, str(path))
    offset, warned = 0, False
    try:
        for batch in ds.to_batches(columns=read, batch_size=batch_size):
            if batch.num_rows == 0:
                continue
            table = apply_columns(pa.Table.from_batches([batch]), columns, str(path), DERIVED_IDS[:1])
            table = validate_queries(table, str(path), offset)
            warned = warned or warn_missing_like_ids(table, "query_id", str(path), offset)
            offset += batch.num_rows
            yield table
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DataError(f"cannot read it ({str(exc).splitlines()[0]})", source=str(path), fix=_FIX) from exc


def plan_columns(names: list[str], columns: dict[str, str] | None, source: str) -> list[str]:
    """The file's columns to read for ``query_id, query_text`` (only the text when the ids are derived), after
    checking the mapping and that both columns are there (or derivable)."""
    from cpo_engine.data.columns import check_mapping

    if columns:
        check_mapping(names, columns, source)
    renamed = [(columns or {}).get(n, n) for n in names]
    derive = "query_id" not in renamed and "query_text" in renamed
    check_columns(renamed + (["query_id"] if derive else []), source)
    src = user_names(columns, COLUMNS)
    return [src["query_text"]] if derive else [src["query_id"], src["query_text"]]


def check_unique_ids(ids: list[str], source: str | None = None, seen: dict[str, int] | None = None,
                     start: int = 0) -> None:
    """A DataError naming the first repeated query_id and both its rows (row numbers from ``start``; ``seen``
    carries the ids of earlier batches of one input)."""
    seen = {} if seen is None else seen
    for i, qid in enumerate(ids, start=start):
        first = seen.setdefault(qid, i)
        if first != i:
            raise DataError(f"query_id {qid!r} appears more than once (rows {first} and {i}; row numbers count "
                            "data rows from 0): each row would get its own recommendation under one id",
                            source=source, column="query_id", rows=[first, i],
                            fix="give every query a unique query_id (drop or rename the repeated rows)")


def scan_queries(path: str | os.PathLike[str], batch_size: int = 65536,
                 columns: dict[str, str] | str | None = None) -> tuple[int, str]:
    """Check a whole query table before any work: it has rows, every batch validates, and no ``query_id``
    repeats (two rows with one id would get two recommendations nobody can tell apart). Returns the row count
    and a sha256 of the ids and texts in order (what a resumable output keys on: new queries at the same path
    are another input). Reads the input once more than the work does; the encoder's cost dwarfs it."""
    import hashlib

    seen: dict[str, int] = {}
    digest = hashlib.sha256()
    n = 0
    for batch in iter_queries(path, batch_size, columns):
        ids, texts = batch.column("query_id").to_pylist(), batch.column("query_text").to_pylist()
        check_unique_ids(ids, source=str(path), seen=seen, start=n)
        for qid, text in zip(ids, texts):
            digest.update(json.dumps([qid, text]).encode())
        n += batch.num_rows
    if n == 0:
        raise DataError("the table has no rows: there is nothing to assign", source=str(path), fix=_FIX)
    return n, digest.hexdigest()


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def count_queries(path: str | os.PathLike[str], columns: dict[str, str] | str | None = None) -> int | None:
    """Rows of a Parquet input from its footers (no scan); None for text formats."""
    ds = query_dataset(path, query_columns(columns))
    if getattr(ds.format, "default_extname", "") != "parquet":
        return None
    return int(ds.count_rows())


def read_queries(path: Any, columns: dict[str, str] | str | None = None) -> pa.Table:
    """The whole query table, validated (for inputs that fit in memory; `cpo assign` streams): a path or
    URI, or a table in memory (pyarrow Table, pandas DataFrame: :func:`~cpo_engine.data.io.as_table`)."""
    from cpo_engine.data.columns import apply_columns
    from cpo_engine.data.io import as_table, is_table_like

    if is_table_like(path):
        table = apply_columns(as_table(path), query_columns(columns), "<table>", DERIVED_IDS[:1])
        if table.num_rows == 0:
            raise DataError("the table has no rows", source="<table>", fix=_FIX)
        from cpo_engine.data.validate import warn_missing_like_ids

        table = validate_queries(table, "<table>")
        warn_missing_like_ids(table, "query_id", "<table>")
        return table
    batches = list(iter_queries(path, columns=columns))
    if not batches:
        raise DataError("the table has no rows", source=str(path), fix=_FIX)
    return pa.concat_tables(batches)


def check_columns(names: list[str], source: str) -> None:
    """Both columns present, or an error that names the closest column and the fix."""
    missing = [c for c in COLUMNS if c not in names]
    if not missing:
        return
    hints = []
    for col in missing:
        lowered = {n.lower(): n for n in names}
        guess = next((lowered[a] for a in ALIASES.get(col, ()) if a in lowered), None) or next(
            iter(difflib.get_close_matches(col, names, n=1, cutoff=0.6)), None)
        hints.append(f"'{col}'" + (f" (did you mean '{guess}'? rename it to '{col}' or map it: --columns "
                                   f"{guess}={col})" if guess else ""))
    raise DataError(f"missing column(s) {', '.join(hints)}; found: {', '.join(names)}", source=source,
                    column=missing[0], fix=_FIX)


def validate_queries(table: pa.Table, source: str = "<queries>", offset: int = 0) -> pa.Table:
    """``query_id, query_text`` as strings with no nulls (other columns dropped). ``offset`` numbers
    the rows of a batch from the start of its input."""
    check_columns(table.column_names, source)
    ids, texts = table.column("query_id"), table.column("query_text")
    if not (pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type) or pa.types.is_integer(ids.type)):
        raise DataError(f"ids must be strings or integers, got {ids.type}", source=source, column="query_id",
                        fix="store query_id as text or integers")
    if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)):
        raise DataError(f"must hold text, got {texts.type}", source=source, column="query_text",
                        fix="store query_text as UTF-8 strings")
    ids, texts = pc.cast(ids, pa.string()), pc.cast(texts, pa.string())
    for name, col in (("query_id", ids), ("query_text", texts)):
        try:
            col.validate(full=True)
        except pa.ArrowInvalid:
            bad = [offset + i for i, v in enumerate(pc.cast(col, pa.binary()).to_pylist())
                   if v is not None and not _is_utf8(v)]
            raise DataError(f"{len(bad)} value(s) are not valid UTF-8 text (row numbers count data rows from 0)",
                            source=source, column=name, rows=bad[:20],
                            fix="re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
        if col.null_count:
            rows = [offset + i for i in pc.indices_nonzero(pc.is_null(col)).to_pylist()]
            raise DataError(f"{col.null_count} missing value(s) (row numbers count data rows from 0)", source=source,
                            column=name, rows=rows, fix=f"fill or drop the rows with an empty '{name}'")
    return pa.table({"query_id": ids, "query_text": texts})


__all__ = ["iter_queries", "read_queries", "scan_queries", "check_unique_ids", "count_queries", "query_dataset", "validate_queries", "check_columns",
           "COLUMNS"]
