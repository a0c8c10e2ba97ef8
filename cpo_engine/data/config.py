"""Configuration of where triplets come from."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DataConfig:
    """Where triplets come from."""

    path: str | None = None
    """Triplet table (Parquet file or folder, CSV, JSONL); None runs the bundled example."""
    tasks: list[str] | None = None
    """Keep only these values of the `task` column (None keeps all)."""


__all__ = ["DataConfig"]
