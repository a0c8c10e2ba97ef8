"""Configuration of where triplets come from."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass
class DataConfig:
    """Where triplets come from."""

    path: str | None = None
    """Triplet table (Parquet file or folder, CSV, JSONL); None runs the bundled example. In Python it may
    also be a table in memory (a pyarrow Table or a pandas DataFrame): it is converted once and kept as an
    :class:`~cpo_engine.data.io.InMemoryTable`, which manifests record as its description."""
    tasks: list[str] | None = None
    """Keep only these values of the `task` column (None keeps all)."""
    columns: dict[str, str] | str | None = None
    """Your column names -> ours, e.g. {question: query_text, answer_score: score} (flag: --columns
    question=query_text,answer_score=score). Ids absent from the table are derived from the texts (q-/p- and a
    hash of the text)."""
    score_field: str | None = None
    """Chat-format JSONL (records with "messages"): the field holding the score or feedback (thumbs up/down ->
    1/0). None: the first of score, reward, rating, thumbs, feedback, label that the records have."""

    def __post_init__(self) -> None:
        from cpo_engine.data.columns import parse_columns
        from cpo_engine.data.io import InMemoryTable, is_table_like

        self.columns = parse_columns(self.columns)

        if isinstance(self.path, os.PathLike):
            self.path = os.fspath(self.path)
        elif self.path is not None and not isinstance(self.path, str) and is_table_like(self.path):
            self.path = InMemoryTable(self.path)

    @property
    def table(self) -> Any:
        """The in-memory ``pyarrow.Table`` when one was given, else None (the data are read from ``path``)."""
        return getattr(self.path, "table", None)

    @classmethod
    def coerce(cls, value: Any) -> "DataConfig":
        """``value`` as a DataConfig: a DataConfig as it is, None as the default (the bundled example), a
        path or an in-memory table (pyarrow, pandas) as ``DataConfig(path=value)``; anything else is a
        :class:`~cpo_engine.exceptions.DataError` saying what a table may be."""
        from cpo_engine.data.io import TABLE_TYPES, is_table_like
        from cpo_engine.exceptions import DataError

        if isinstance(value, cls):
            return value
        if value is None:
            return cls()
        if isinstance(value, (str, os.PathLike)) or is_table_like(value):
            return cls(path=value)
        raise DataError(f"data must be a DataConfig or a table, got {type(value).__name__}",
                        fix=f"pass {TABLE_TYPES}")


__all__ = ["DataConfig"]
