"""Columns as users have them: a mapping from their column names to ours (``data.columns``, ``--columns
question=query_text,answer_score=score``), and ids derived from the texts when a table has none.

A derived id is stable (the same text gets the same id in every file and every night): ``q-`` (queries) or
``p-`` (prompts) and the first 12 hex digits of the sha256 of the text; the empty prompt (no system
prompt, the no-instruction baseline) is ``p-empty``.
"""

from __future__ import annotations

import difflib
import hashlib
from typing import Any

import pyarrow as pa

from cpo_engine.data.schema import OPTIONAL, REQUIRED
from cpo_engine.exceptions import ConfigError, DataError

#: (id column, the text column it is derived from, prefix of a derived id)
DERIVED_IDS = (("query_id", "query_text", "q-"), ("prompt_id", "prompt_text", "p-"))
_EXAMPLE = "e.g. --columns question=query_text,answer_score=score (data.columns: {question: query_text})"


def parse_columns(value: Any, where: str = "data.columns") -> dict[str, str] | None:
    """``value`` (a mapping, or the flag's text ``a=b,c=d``) as ``{user column: our column}``; None or empty:
    no mapping. A target that is not one of our columns is a ConfigError with the closest one."""
    if value is None or value == "" or value == {}:
        return None
    if isinstance(value, str):
        pairs = {}
        for item in value.split(","):
            src, sep, dst = item.partition("=")
            if not sep or not src.strip() or not dst.strip():
                raise ConfigError(f"{where}: '{item}' must look like THEIR_COLUMN=OUR_COLUMN ({_EXAMPLE})")
            pairs[src.strip()] = dst.strip()
        value = pairs
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ConfigError(f"{where} must map column names to column names, got {value!r} ({_EXAMPLE})")
    ours = [*REQUIRED, *OPTIONAL]
    for src, dst in value.items():
        if dst not in ours:
            close = difflib.get_close_matches(dst, ours, n=1)
            raise ConfigError(f"{where}: '{src}={dst}': '{dst}' is not a column cpo reads"
                              + (f" (did you mean '{close[0]}'?)" if close else f"; ours: {', '.join(ours)}"))
    targets = list(value.values())
    repeated = sorted({t for t in targets if targets.count(t) > 1})
    if repeated:
        raise ConfigError(f"{where}: more than one column is mapped to '{repeated[0]}' ({value})")
    return dict(value)


def apply_columns(table: pa.Table, columns: dict[str, str] | None, source: str,
                  derive: tuple[tuple[str, str, str], ...] = DERIVED_IDS) -> pa.Table:
    """Rename the user's columns to ours, then add the id columns of ``derive`` that are absent but whose
    text column is present. A mapped column that is not in the table, or a mapping onto a column the table
    already has, is a DataError naming the file and the column."""
    columns = parse_columns(columns)
    names = table.column_names
    if columns:
        check_mapping(names, columns, source)
        table = table.rename_columns([columns.get(n, n) for n in names])
    for id_col, text_col, prefix in derive:
        if id_col not in table.column_names and text_col in table.column_names:
            table = table.append_column(id_col, derived_ids(table.column(text_col), prefix, source, text_col))
    return table


def check_mapping(names: list[str], columns: dict[str, str], source: str) -> None:
    """Every mapped column is in ``names`` and no target is already there (two columns of one name)."""
    for src, dst in columns.items():
        if src not in names:
            close = difflib.get_close_matches(src, names, n=1, cutoff=0.6)
            raise DataError(f"the column mapping names '{src}' (-> {dst}) but the table has no such column"
                            + (f" (did you mean '{close[0]}'?)" if close else "") + f"; found: {', '.join(names)}",
                            source=source, column=src, fix="fix the name in --columns / data.columns")
        if dst in names and dst not in columns:
            raise DataError(f"the column mapping renames '{src}' to '{dst}', but the table already has a '{dst}' "
                            "column", source=source, column=dst,
                            fix=f"map only one column to '{dst}' (drop '{src}={dst}', or map '{dst}' elsewhere too)")


def derived_ids(texts: Any, prefix: str, source: str = "<table>", text_col: str = "") -> pa.Array:
    """``prefix`` + the first 12 hex digits of each text's sha256 ('p-empty' / 'q-empty' for '')."""
    out = []
    for i, t in enumerate(texts.to_pylist()):
        if t is None:
            raise DataError(f"a missing text (row {i}; row numbers count data rows from 0): no id can be derived "
                            "from it", source=source, column=text_col, rows=[i],
                            fix=f"fill or drop the rows with an empty '{text_col}'")
        out.append(f"{prefix}empty" if t == "" else prefix + hashlib.sha256(str(t).encode("utf-8")).hexdigest()[:12])
    return pa.array(out, pa.string())


def user_names(columns: dict[str, str] | None, ours: tuple[str, ...]) -> dict[str, str]:
    """``{our column: the user's column}`` for the columns of ``ours`` (unmapped ones keep their name)."""
    inverse = {v: k for k, v in (columns or {}).items()}
    return {c: inverse.get(c, c) for c in ours}


__all__ = ["parse_columns", "apply_columns", "check_mapping", "derived_ids", "user_names", "DERIVED_IDS"]
