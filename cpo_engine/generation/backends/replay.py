"""Replay backend: serves recorded outcomes from a triplet table instead of calling an LLM.

For evaluation (replaying a full-grid log under a simulated logging policy) and for tests. The
``sample``-th request for a (query, prompt) cell returns the cell's ``sample``-th recorded row (by
the ``sample`` column when present, else file order): its answer text (``text_column``, empty
when missing) and its recorded ``score``, which the builder keeps instead of regrading.
A cell that was never recorded, or asked for more samples than were recorded, fails loudly: a
silent gap would bias every estimate built on the replay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from cpo_engine.exceptions import ConfigError, DataError
from cpo_engine.generation.types import GenerationRequest, GenerationResponse


@dataclass
class ReplayConfig:
    """Settings of the replay backend (the ``backend.replay`` section).

    Attributes
    ----------
    path : str or None
        Triplet file or folder to serve from; required when ``backend.kind`` is ``replay``.
    text_column : str
        Column with the recorded answer text; missing values replay as empty text.
    """

    path: str | None = None
    text_column: str = "raw_answer"

    def check(self) -> None:
        """A replay needs a log: checked only when this backend is the one chosen."""
        if not self.path:
            raise ConfigError("backend.kind='replay' needs backend.replay.path (a triplet file or folder): "
                              "pass --replay PATH or --set backend.replay.path=PATH")


class ReplayBackend:
    """Recorded outcomes behind the :class:`~cpo_engine.generation.types.Backend` interface.

    Parameters
    ----------
    config : ReplayConfig
        ``path`` (a triplet file or folder) and ``text_column``.
    model : str
        Label written in the ``model`` column.
    table : pyarrow.Table, optional
        Use this table instead of reading ``config.path``.
    """

    name = "replay"

    def __init__(self, config: ReplayConfig, model: str = "default", table: Any = None) -> None:
        self.config = config
        self.model = model
        self.source = config.path or "<table>"
        if table is None:
            config.check()
            from cpo_engine.data import read_triplets

            table = read_triplets(config.path)
        self._cells = _index(table, config.text_column)

    def close(self) -> None:
        return None

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResponse]:
        return [self._one(r) for r in requests]

    def _one(self, req: GenerationRequest) -> GenerationResponse:
        k = req.key
        cell = self._cells.get((k.query_id, k.prompt_id))
        if cell is None:
            raise DataError(
                f"no recorded outcome for query_id={k.query_id!r}, prompt_id={k.prompt_id!r}",
                source=self.source,
                fix="replay only (query, prompt) pairs present in the log, or use a live backend (vllm/openai)",
            )
        if k.sample >= len(cell):
            raise DataError(
                f"sample {k.sample} requested for query_id={k.query_id!r}, prompt_id={k.prompt_id!r} "
                f"but only {len(cell)} sample(s) were recorded",
                source=self.source, fix=f"set samples_per_cell <= {len(cell)} for this log",
            )
        text, score = cell[k.sample]
        return GenerationResponse(key=k, text=text, recorded_score=score, finish_reason="replay")


def _index(table: Any, text_column: str) -> dict[tuple[str, str], list[tuple[str, float]]]:
    cols = table.column_names
    qid, pid, score = (table.column(c).to_pylist() for c in ("query_id", "prompt_id", "score"))
    text = table.column(text_column).to_pylist() if text_column in cols else [None] * len(qid)
    sample = table.column("sample").to_pylist() if "sample" in cols else list(range(len(qid)))
    cells: dict[tuple[str, str], list[tuple[int, str, float]]] = {}
    for q, p, s, t, y in zip(qid, pid, sample, text, score):
        y = math.nan if y is None else float(y)
        cells.setdefault((str(q), str(p)), []).append((s if s is not None else 0, t or "", y))
    return {k: [(t, y) for _, t, y in sorted(v, key=lambda r: r[0])] for k, v in cells.items()}


__all__ = ["ReplayBackend", "ReplayConfig"]
