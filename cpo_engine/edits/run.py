"""One call from a file to a report and an edit prior (what ``cpo edits`` runs)."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cpo_engine.edits.analysis import EditReport, EffectConfig, analyze_edits
from cpo_engine.edits.pairs import (
    PairConfig,
    PairedUnits,
    read_trajectories,
    units_from_trajectories,
    units_from_triplets,
)
from cpo_engine.edits.prior import PriorConfig, edit_prior
from cpo_engine.exceptions import DataError

_TRIPLET_COLS = {"query_id", "query_text", "prompt_id", "prompt_text", "score"}


def _filter(table: pa.Table, filters: dict[str, list[str]], source: str) -> pa.Table:
    for col, values in filters.items():
        if col not in table.column_names:
            raise DataError(f"cannot filter on missing column '{col}'", source=source, column=col,
                            fix=f"filter on one of {table.column_names}")
        table = table.filter(pc.is_in(pc.cast(table.column(col), pa.string()), value_set=pa.array(values)))
        if table.num_rows == 0:
            raise DataError(f"no rows left after keeping {col} in {values}", source=source, column=col,
                            fix="check the filter values")
    return table


def load_units(
    data: Any,
    kind: Literal["auto", "triplets", "trajectory"] = "auto",
    pair_config: PairConfig | None = None,
    filters: dict[str, list[str]] | None = None,
    score_column: str | None = None,
) -> PairedUnits:
    """Read triplets or a trajectory (``kind="auto"``: triplets if the triplet columns are there).

    ``filters`` keeps rows whose column value is in the list, e.g. ``{"task": ["svamp", "gsm8k"]}``.
    """
    from cpo_engine.data.io import as_table, is_table_like

    in_memory = is_table_like(data) or not isinstance(data, (str, os.PathLike))
    source = "<table>" if in_memory else str(data)
    table = as_table(data, source)  # a path, a pyarrow Table or a pandas DataFrame
    table = _filter(table, filters or {}, source)
    if kind == "auto":
        kind = "triplets" if _TRIPLET_COLS <= set(table.column_names) else "trajectory"
    if kind == "triplets":
        if score_column and score_column != "score":
            table = table.drop_columns([c for c in ("score",) if c in table.column_names])
            table = table.rename_columns(["score" if c == score_column else c for c in table.column_names])
        return units_from_triplets(table, pair_config, source)
    if in_memory:
        raise DataError("trajectories are read from a file", source=source, fix="pass the trajectory's path")
    traj = read_trajectories(data, score_column)
    if filters:
        traj = traj[traj.apply(lambda r: all(str(r.get(c)) in v for c, v in filters.items() if c in r), axis=1)]
    return units_from_trajectories(traj, pair_config, source)


def analyze(
    data: Any,
    kind: Literal["auto", "triplets", "trajectory"] = "auto",
    pair_config: PairConfig | None = None,
    effect_config: EffectConfig | None = None,
    prior_config: PriorConfig | None = None,
    filters: dict[str, list[str]] | None = None,
    score_column: str | None = None,
) -> tuple[EditReport, dict]:
    """Load ``data``, estimate edit effects and build the edit prior; returns ``(report, prior)``."""
    units = load_units(data, kind, pair_config, filters, score_column)
    report = analyze_edits(units, effect_config)
    prior_config = prior_config or PriorConfig()
    scale = score_unit(units)
    prior = edit_prior(report.families, replace(prior_config, temperature=prior_config.temperature * scale))
    prior["meta"].update(score_unit=scale, temperature=prior_config.temperature)
    return report, prior


def score_unit(units: PairedUnits) -> float:
    """The score distance the prior's temperature is a fraction of: 1 for scores within [0, 1] (0/1
    correctness, rates), else the observed range of the cell scores (a rubric 1-5: about 4; BLEU 0-100:
    about 100), so the same temperature gives the same prior whatever the score's scale."""
    y = np.concatenate([units.y_parent, units.y_child])
    y = y[np.isfinite(y)]
    if len(y) == 0 or (y.min() >= 0 and y.max() <= 1):
        return 1.0
    spread = float(y.max() - y.min())
    return spread if spread > 0 else 1.0


__all__ = ["analyze", "load_units", "score_unit"]
