"""Readers for triplet tables: Parquet (a file or a folder of shards), CSV/TSV and JSONL."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from cpo_engine.exceptions import DataError

PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
CSV_SUFFIXES = (".csv", ".tsv")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
_FORMATS_HINT = "give a .parquet file, a folder of .parquet shards, a .csv/.tsv file or a .jsonl file"


def read_table(path: str | os.PathLike[str]) -> pa.Table:
    """Read a table from disk without validating it as triplets.

    Raises
    ------
    DataError
        If the path does not exist, is not a supported table, or cannot be decoded.
    """
    p = Path(path)
    if not p.exists():
        raise DataError("the path does not exist", source=str(p), fix="check the path; " + _FORMATS_HINT)
    if p.is_dir():
        return _read_parquet_dir(p)
    kind = _kind(p)
    try:
        table = pq.read_table(p) if kind == "parquet" else _read_csv(p) if kind == "csv" else _read_jsonl(p)
    except DataError:
        raise
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        _raise_decode_error(p, kind, exc)
        raise  # unreachable: _raise_decode_error always raises
    column_names(table.schema, str(p))
    return table


def column_names(schema: pa.Schema, source: str) -> list[str]:
    """The schema's column names, or a DataError naming ``source`` when one is not valid UTF-8 (the readers
    keep the bytes of a Latin-1 CSV header or JSON key; reading the name raised UnicodeDecodeError)."""
    try:
        return schema.names
    except UnicodeDecodeError as exc:
        raise DataError(f"a column name is not valid UTF-8 text ({exc})", source=source,
                        fix="re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None


def _kind(p: Path) -> str:
    suffix = p.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    with open(p, "rb") as f:
        if f.read(4) == b"PAR1":
            return "parquet"
    raise DataError(f"'{p.suffix or p.name}' is not a table format cpo_engine reads", source=str(p), fix=_FORMATS_HINT)


def _read_parquet_dir(p: Path) -> pa.Table:
    shards = sorted(f for f in p.rglob("*") if f.suffix.lower() in PARQUET_SUFFIXES and not f.name.startswith("."))
    if not shards:
        raise DataError("the folder holds no .parquet shards", source=str(p), fix=_FORMATS_HINT)
    tables = []
    for shard in shards:
        try:
            tables.append(pq.read_table(shard))
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"cannot read this Parquet shard ({exc})", source=str(shard),
                            fix="remove or rewrite the corrupt shard") from exc
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DataError(f"the shards have incompatible schemas ({exc})", source=str(p),
                        fix="write every shard with the same columns and types") from exc
    column_names(table.schema, str(p))
    return table


def _read_csv(p: Path) -> pa.Table:
    delimiter = "\t" if p.suffix.lower() == ".tsv" else ","
    # Every column as string first: ids like "007" must not become integers; score is cast later.
    return pacsv.read_csv(
        p,
        parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(strings_can_be_null=False, quoted_strings_can_be_null=False),
    )


def _read_jsonl(p: Path) -> pa.Table:
    return pajson.read_json(p)


def _raise_decode_error(p: Path, kind: str, exc: Exception) -> None:
    # Invalid UTF-8 does not land here: the readers keep it, and the validator names its rows.
    raise DataError(f"cannot read it as {kind} ({str(exc).splitlines()[0]})", source=str(p),
                    fix=_FORMATS_HINT) from exc



__all__ = ["read_table", "column_names"]
