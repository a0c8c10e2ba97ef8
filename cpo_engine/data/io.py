"""Readers for triplet tables: Parquet (a file or a folder of shards), CSV/TSV and JSONL."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from cpo_engine.exceptions import DataError

PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
CSV_SUFFIXES = (".csv", ".tsv")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
_FORMATS_HINT = "give a .parquet file, a folder of .parquet shards, a .csv/.tsv file or a .jsonl file"


#: What a table argument may be, for error messages.
TABLE_TYPES = ("a pyarrow Table, a pandas DataFrame (or another dataframe with __arrow_c_stream__, "
               "__dataframe__ or to_arrow) or the path of a .parquet file or folder, a .csv/.tsv or a .jsonl file")


def is_table_like(obj: Any) -> bool:
    """Whether ``obj`` is an in-memory table :func:`as_table` converts (not a path)."""
    return isinstance(obj, (pa.Table, pa.RecordBatch, InMemoryTable)) or _is_pandas(obj) or any(
        hasattr(obj, a) for a in ("__arrow_c_stream__", "__dataframe__", "to_arrow"))


def as_table(data: Any, source: str | None = None) -> pa.Table:
    """The one conversion at the API boundary: a table argument as a ``pyarrow.Table``.

    Accepts a pyarrow Table or RecordBatch; a pandas DataFrame (its index dropped; pandas is only
    imported when given one); another dataframe that exports Arrow (``__arrow_c_stream__``, e.g.
    polars or DuckDB results; ``to_arrow()``; or the ``__dataframe__`` interchange protocol); or a path
    (``str`` or ``os.PathLike``), read by :func:`read_table`. Anything else is a :class:`DataError`
    naming what was given and what is accepted.

    >>> import pandas as pd
    >>> as_table(pd.DataFrame({"query_id": ["q1"], "score": [1.0]})).column_names
    ['query_id', 'score']
    """
    if isinstance(data, InMemoryTable):
        return data.table
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, (str, os.PathLike)):
        return read_table(data)
    src = source or f"<{type(data).__name__}>"
    try:
        if _is_pandas(data):
            return pa.Table.from_pandas(data, preserve_index=False)
        if hasattr(data, "__arrow_c_stream__"):
            return pa.table(data)
        if hasattr(data, "to_arrow"):
            table = data.to_arrow()
            return table if isinstance(table, pa.Table) else as_table(table, source)
        if hasattr(data, "__dataframe__"):
            from pyarrow.interchange import from_dataframe

            return from_dataframe(data)
    except (pa.ArrowException, TypeError, ValueError) as exc:  # mixed-type object columns, unsupported dtypes
        raise DataError(f"cannot convert this {type(data).__name__} to an Arrow table ({str(exc).splitlines()[0]})",
                        source=src, fix="give every column one type (e.g. ids as str, score as float)") from exc
    raise DataError(f"a table was expected, got {type(data).__name__}", source=src, fix=f"pass {TABLE_TYPES}")


def _is_pandas(obj: Any) -> bool:
    """A pandas DataFrame, checked without importing pandas when the caller never did."""
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(obj, pd.DataFrame)


class InMemoryTable(str):
    """A table given in memory where a config expects a path (``FitConfig(data=df)``,
    ``DataConfig(path=table)``): reads as a short description (``<in-memory table: N rows x M columns>``),
    so a config holding it still prints and is written to a manifest as JSON; ``.table`` is the
    ``pyarrow.Table``, converted once by :func:`as_table`."""

    table: pa.Table

    def __new__(cls, data: Any) -> "InMemoryTable":
        table = as_table(data)
        self = super().__new__(cls, f"<in-memory table: {table.num_rows} rows x {table.num_columns} columns>")
        self.table = table
        return self

    def __deepcopy__(self, memo: dict) -> "InMemoryTable":  # dataclasses.asdict copies configs: share the table
        return self

    def __copy__(self) -> "InMemoryTable":
        return self

    def __reduce__(self) -> tuple:  # pickles (Ray) carry the table, not only its description
        return (InMemoryTable, (self.table,))

    def sha256(self) -> str:
        """sha256 of the table's Arrow IPC stream (schema and values): the data hash a file would get."""
        import hashlib

        h = hashlib.sha256()

        class _Sink:
            closed = False

            def write(self, b: Any) -> int:
                h.update(b)
                return len(b)

            def flush(self) -> None:
                pass

        with pa.ipc.new_stream(pa.PythonFile(_Sink(), mode="w"), self.table.schema) as writer:
            writer.write_table(self.table)
        return h.hexdigest()


def read_table(path: str | os.PathLike[str], score_field: str | None = None,
               columns: dict[str, str] | None = None) -> pa.Table:
    """Read a table without validating it as triplets: a local path, or a URI (``s3://``, ``gs://``, ...)
    read through ``pyarrow.fs`` (:mod:`cpo_engine.data.storage`). A ``.jsonl`` file of chat records
    (``{"messages": [...], ...}``) is read by :func:`cpo_engine.data.chat.read_chat` (``score_field``: the
    record field holding the score or feedback; ``columns``: the user's column mapping, which may name it).

    Raises
    ------
    DataError
        If the path does not exist, is not a supported table, or cannot be decoded.
    """
    from cpo_engine.data.storage import CREDENTIALS_HINT, is_remote, location, path_type

    if is_remote(path):
        source, opener = str(path), lambda: _open_remote(str(path))
        kind_of = path_type(source)
        if kind_of is None:
            raise DataError("the path does not exist", source=source, fix=f"check the URI; {CREDENTIALS_HINT}")
        if kind_of == "dir":
            return _read_parquet_dir_remote(source)
        fs, inner = location(source)
        parquet: Any = lambda: pq.read_table(inner, filesystem=fs)  # noqa: E731
    else:
        p = Path(path)
        source, opener, parquet = str(p), lambda: open(p, "rb"), lambda: pq.read_table(p)
        if not p.exists():
            raise DataError("the path does not exist", source=source, fix="check the path; " + _FORMATS_HINT)
        if p.is_dir():
            return _read_parquet_dir(p)
    kind = _kind(source, opener)
    try:
        table = (parquet() if kind == "parquet" else _read_csv(source, opener) if kind == "csv"
                 else _read_jsonl(source, opener, score_field, columns))
    except DataError:
        raise
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        _raise_decode_error(source, kind, exc)
        raise  # unreachable: _raise_decode_error always raises
    column_names(table.schema, source)
    return table


def _open_remote(uri: str) -> Any:
    from cpo_engine.data.storage import open_input

    return open_input(uri)


def column_names(schema: pa.Schema, source: str) -> list[str]:
    """The schema's column names, or a DataError naming ``source`` when one is not valid UTF-8 (the readers
    keep the bytes of a Latin-1 CSV header or JSON key; reading the name raised UnicodeDecodeError)."""
    try:
        return schema.names
    except UnicodeDecodeError as exc:
        raise DataError(f"a column name is not valid UTF-8 text ({exc})", source=source,
                        fix="re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None


def _kind(source: str, opener: Any) -> str:
    name = source.rstrip("/").rsplit("/", 1)[-1]
    suffix = os.path.splitext(name)[1].lower()
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    with opener() as f:
        if f.read(4) == b"PAR1":
            return "parquet"
    raise DataError(f"'{suffix or name}' is not a table format cpo_engine reads", source=source, fix=_FORMATS_HINT)


def _read_parquet_dir(p: Path) -> pa.Table:
    shards = sorted(f for f in p.rglob("*") if f.suffix.lower() in PARQUET_SUFFIXES and not f.name.startswith("."))
    if not shards:
        raise DataError("the folder holds no .parquet shards", source=str(p), fix=_FORMATS_HINT)
    return _concat_shards([(str(shard), lambda shard=shard: pq.read_table(shard)) for shard in shards], str(p))


def _read_parquet_dir_remote(uri: str) -> pa.Table:
    from cpo_engine.data.storage import list_files, location

    fs, inner = location(uri)
    shards = list_files(uri, PARQUET_SUFFIXES)
    if not shards:
        raise DataError("the folder holds no .parquet shards", source=uri, fix=_FORMATS_HINT)
    scheme = uri.split("://", 1)[0]
    return _concat_shards([(f"{scheme}://{s}", lambda s=s: pq.read_table(s, filesystem=fs)) for s in shards], uri)


def _concat_shards(shards: list[tuple[str, Any]], source: str) -> pa.Table:
    tables = []
    for name, read in shards:
        try:
            tables.append(read())
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"cannot read this Parquet shard ({exc})", source=name,
                            fix="remove or rewrite the corrupt shard") from exc
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DataError(f"the shards have incompatible schemas ({exc})", source=source,
                        fix="write every shard with the same columns and types") from exc
    column_names(table.schema, source)
    return table


def _read_csv(source: str, opener: Any) -> pa.Table:
    delimiter = "\t" if source.lower().endswith(".tsv") else ","
    # Every column as string first: ids like "007" must not become integers; score is cast later.
    with opener() as f:
        return pacsv.read_csv(
            f,
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(strings_can_be_null=False, quoted_strings_can_be_null=False),
        )


def _read_jsonl(source: str, opener: Any, score_field: str | None = None,
                columns: dict[str, str] | None = None) -> pa.Table:
    from cpo_engine.data.chat import is_chat, read_chat

    with opener() as f:
        if is_chat(f.read(1 << 16)):
            return read_chat(source, opener, score_field, columns)
    with opener() as f:
        return pajson.read_json(f)


def _raise_decode_error(source: str, kind: str, exc: Exception) -> None:
    # Invalid UTF-8 does not land here: the readers keep it, and the validator names its rows.
    raise DataError(f"cannot read it as {kind} ({str(exc).splitlines()[0]})", source=source,
                    fix=_FORMATS_HINT) from exc



__all__ = ["read_table", "as_table", "is_table_like", "InMemoryTable", "column_names", "TABLE_TYPES"]
