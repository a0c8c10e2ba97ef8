"""Build the paired design: one unit per (edit, query) with the parent's and the child's score.

Inputs, all reduced to *cell means*, the mean score of one prompt on one query within one
``(task, model)`` (repeated samples are averaged first):

* a **triplet table** (full grid or logged, ``cpo_engine.data`` contract). Edits are every ordered
  pair of prompts of a ``(task, model)`` evaluated on at least one common query, or, when the table
  has a ``parent_id`` column, the parent -> child links it names (``pairs="auto"``);
* **trajectories** of a prompt optimizer (the engine's search traces or anyone else's): a CSV,
  JSONL or Parquet table, one row per evaluated prompt, see :func:`read_trajectories`.

An edit is identified within its cell by ``(parent_id, child_id)``; its representations come from
:func:`cpo_engine.edits.extract.extract_edit`.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from cpo_engine.edits.config import PairConfig  # re-exported: defined in the light config module
from cpo_engine.edits.extract import SURFACE_FEATURES, extract_edit
from cpo_engine.edits.families import family_presence
from cpo_engine.exceptions import DataError
from cpo_engine.taxonomy import EDIT_FAMILIES, candidate_id

FAMILIES: tuple[str, ...] = tuple(EDIT_FAMILIES)
FAM_COLS: tuple[str, ...] = tuple(f"fam_{f}" for f in FAMILIES)
ALL_LABEL = "all"
_NUM = re.compile(r"\d+(?:\.\d+)?")

#: Column names accepted in trajectory files, first match wins.
TRAJECTORY_ALIASES: dict[str, tuple[str, ...]] = {
    "prompt_text": ("prompt_text", "prompt", "text", "instruction"),
    "prompt_id": ("prompt_id", "id", "candidate_id"),
    "parent_text": ("parent_text", "parent_prompt"),
    "parent_id": ("parent_id", "parent"),
    "score": ("score", "reward", "accuracy", "metric", "value"),
    "second_parent": ("second_parent", "parent2", "parent_2", "second_parent_id"),
}


@dataclass
class PairedUnits:
    """The paired design.

    Attributes
    ----------
    edits : DataFrame
        One row per edit: ``task, model, parent_id, child_id, parent_text, child_text, operator``,
        the signed family vector ``fam_<family>``, surface changes ``d_*``, and parent features
        ``par_quality`` (parent's mean score in the cell), ``par_log_words``, ``par_has_<family>``.
    motifs : list of dict
        Per edit, its text-diff motifs ``{"+ gram" | "- gram": 1}``.
    unit_edit, unit_query : ndarray of int
        Per unit, the row of ``edits`` and the index into ``query_ids``.
    y_parent, y_child, weight : ndarray of float
        Per unit, the parent's and child's cell-mean score on the query, and the unit's weight.
    query_ids : ndarray of str
        Unique query ids (prefixed by nothing: ids are global across tasks).
    query_features : ndarray (n_queries, 2)
        ``log1p(characters)`` and ``log1p(numbers)`` of the query text (zeros when unknown).
    """

    edits: pd.DataFrame
    motifs: list[dict[str, int]]
    unit_edit: np.ndarray
    unit_query: np.ndarray
    y_parent: np.ndarray
    y_child: np.ndarray
    weight: np.ndarray
    query_ids: np.ndarray
    query_features: np.ndarray

    @property
    def dy(self) -> np.ndarray:
        """Paired outcome: child minus parent score on the same query."""
        return self.y_child - self.y_parent

    @property
    def n_units(self) -> int:
        return len(self.unit_edit)


# ---------------------------------------------------------------------------------------- readers


def _cell_means(df: pd.DataFrame) -> pd.DataFrame:
    """Average repeated samples into one row per (task, model, query_id, prompt_id)."""
    keys = ["task", "model", "query_id", "prompt_id"]
    return df.groupby(keys, sort=False, observed=True).agg(y=("score", "mean"), w=("w", "mean")).reset_index()


def _row_weights(table: pa.Table) -> np.ndarray:
    if "weight" in table.column_names:
        return table.column("weight").to_numpy(zero_copy_only=False).astype(np.float64)
    if "propensity" in table.column_names:
        return 1.0 / table.column("propensity").to_numpy(zero_copy_only=False).astype(np.float64)
    return np.ones(table.num_rows)


def _labels(table: pa.Table, col: str) -> np.ndarray:
    if col not in table.column_names:
        return np.full(table.num_rows, ALL_LABEL, dtype=object)
    vals = np.asarray(table.column(col).to_pylist(), dtype=object)
    vals[pd.isna(vals)] = ALL_LABEL
    return vals.astype(str).astype(object)


def units_from_triplets(table: pa.Table, config: PairConfig | None = None, source: str = "<table>") -> PairedUnits:
    """Paired units from a triplet table (validated with ``cpo_engine.data.validate_triplets``).

    A ``parent_id`` column (optional, null for roots) gives lineage; otherwise every ordered pair of
    prompts in a ``(task, model)`` that share queries is an edit.
    """
    from cpo_engine.data import validate_triplets

    cfg = config or PairConfig()
    table = validate_triplets(table, source=source)
    df = pd.DataFrame({
        "task": _labels(table, "task"),
        "model": _labels(table, "model"),
        "query_id": table.column("query_id").to_numpy(zero_copy_only=False),
        "prompt_id": table.column("prompt_id").to_numpy(zero_copy_only=False),
        "score": table.column("score").to_numpy(zero_copy_only=False),
        "w": _row_weights(table),
    })
    prompts = _first_text(table, "prompt_id", "prompt_text")
    queries = _first_text(table, "query_id", "query_text")
    lineage = _lineage_from_triplets(table, df, source)
    return build_units(_cell_means(df), prompts, queries, lineage, cfg, source)


def _first_text(table: pa.Table, id_col: str, text_col: str) -> dict[str, str]:
    ids = table.column(id_col).to_numpy(zero_copy_only=False)
    texts = table.column(text_col).to_numpy(zero_copy_only=False)
    _, first = np.unique(ids, return_index=True)
    return {str(ids[i]): str(texts[i]) for i in first}


def _lineage_from_triplets(table: pa.Table, df: pd.DataFrame, source: str) -> pd.DataFrame | None:
    if "parent_id" not in table.column_names:
        return None
    par = np.asarray(table.column("parent_id").to_pylist(), dtype=object)
    has = ~pd.isna(par)
    if not has.any():
        return None
    links = pd.DataFrame({
        "task": df["task"].to_numpy()[has], "model": df["model"].to_numpy()[has],
        "parent_id": par[has].astype(str), "child_id": df["prompt_id"].to_numpy()[has].astype(str),
    })
    links["operator"] = _optional_col(table, "operator", has)
    links["family"] = _optional_col(table, "family", has)
    links["second_parent"] = _optional_col(table, "second_parent", has)
    return links.drop_duplicates(["task", "model", "parent_id", "child_id"]).reset_index(drop=True)


def _optional_col(table: pa.Table, col: str, mask: np.ndarray) -> np.ndarray:
    if col not in table.column_names:
        return np.full(int(mask.sum()), None, dtype=object)
    return np.asarray(table.column(col).to_pylist(), dtype=object)[mask]


def _pick(columns: list[str], key: str) -> str | None:
    low = {c.lower(): c for c in columns}
    return next((low[a] for a in TRAJECTORY_ALIASES[key] if a in low), None)


def read_trajectories(path: str | os.PathLike[str], score_column: str | None = None) -> pd.DataFrame:
    """Read an optimizer trajectory: one row per evaluated prompt (CSV, JSONL or Parquet).

    Columns (case-insensitive; aliases in :data:`TRAJECTORY_ALIASES`): ``prompt`` (text, required),
    ``parent`` (the parent's id or text; empty for a root), ``score`` (required; or name it with
    ``score_column``), optional ``prompt_id``, ``task``, ``model``, ``query_id`` (per-query scores:
    the paired design; without it each edit is one unit), ``operator``, ``family``,
    ``second_parent``. The engine's search traces (``cpo_engine.search.Candidate`` rows with
    ``text, id, parent, operator, family`` plus a score) read as they are.

    Returns
    -------
    DataFrame
        Normalized columns ``task, model, query_id, prompt_id, prompt_text, parent_id, score,
        operator, family, second_parent``.
    """
    from cpo_engine.data.io import read_table

    raw = read_table(path).to_pandas()
    src = str(path)
    cols = list(raw.columns)
    text_col = _pick(cols, "prompt_text")
    score_col = score_column or _pick(cols, "score")
    for need, col in (("prompt text ('prompt')", text_col), ("score ('score')", score_col)):
        if col is None or col not in raw.columns:
            raise DataError(
                f"missing the {need} column; found columns {cols}", source=src,
                fix="name the columns prompt, parent, task, model, score (see docs/edits.md), "
                "or pass --score-column",
            )
    return _normalize_trajectory(raw, text_col, score_col, src)


def _normalize_trajectory(raw: pd.DataFrame, text_col: str, score_col: str, src: str) -> pd.DataFrame:
    cols = list(raw.columns)
    out = pd.DataFrame({"prompt_text": raw[text_col].astype(str)})
    pid = _pick(cols, "prompt_id")
    out["prompt_id"] = raw[pid].astype(str) if pid else out["prompt_text"].map(candidate_id)
    for name in ("task", "model", "query_id", "operator", "family"):
        col = next((c for c in cols if c.lower() == name), None)
        out[name] = raw[col].where(raw[col].notna(), None) if col else None
    out["task"] = out["task"].fillna(ALL_LABEL).astype(str)
    out["model"] = out["model"].fillna(ALL_LABEL).astype(str)
    out["query_id"] = out["query_id"].fillna(ALL_LABEL).astype(str)
    out["score"] = pd.to_numeric(raw[score_col], errors="coerce")
    bad = np.flatnonzero(~np.isfinite(out["score"].to_numpy(dtype=float)))
    if len(bad):
        raise DataError("scores must be finite numbers", source=src, column=score_col, rows=bad.tolist(),
                        fix="drop the rows or fill in their scores")
    out["parent_id"] = _resolve_parents(raw, out, src)
    sp = _pick(cols, "second_parent")
    out["second_parent"] = raw[sp].where(raw[sp].notna(), None) if sp else None
    return out


def _resolve_parents(raw: pd.DataFrame, out: pd.DataFrame, src: str) -> pd.Series:
    """Parent ids: a parent column holding known ids, else known texts (mapped to their ids)."""
    cols = list(raw.columns)
    ptext, pid = _pick(cols, "parent_text"), _pick(cols, "parent_id")
    col = ptext or pid
    if col is None:
        raise DataError("no parent column: an edit needs a parent", source=src,
                        fix="add a 'parent' column (the parent's prompt_id or text; empty for roots)")
    vals = raw[col].where(raw[col].notna() & (raw[col].astype(str).str.strip() != ""), None)
    by_text = dict(zip(out["prompt_text"], out["prompt_id"]))
    known_ids = set(out["prompt_id"])
    mapped = vals.map(lambda v: None if v is None else (v if str(v) in known_ids else by_text.get(str(v))))
    missing = np.flatnonzero(vals.notna().to_numpy() & mapped.isna().to_numpy())
    if len(missing):
        raise DataError("parent not found among the evaluated prompts", source=src, column=col,
                        rows=missing.tolist(), fix="every parent must itself have a row with its score")
    return mapped.map(lambda v: None if v is None else str(v))


def units_from_trajectories(traj: pd.DataFrame, config: PairConfig | None = None,
                            source: str = "<trajectory>") -> PairedUnits:
    """Paired units from a normalized trajectory (:func:`read_trajectories`): lineage edits only."""
    cfg = config or PairConfig()
    df = traj.assign(w=1.0)
    prompts = dict(zip(df["prompt_id"].astype(str), df["prompt_text"].astype(str)))
    links = df.loc[df["parent_id"].notna(), ["task", "model", "parent_id", "prompt_id", "operator", "family",
                                             "second_parent"]]
    links = links.rename(columns={"prompt_id": "child_id"}).drop_duplicates(["task", "model", "parent_id", "child_id"])
    if links.empty:
        raise DataError("no row has a parent: nothing to compare", source=source,
                        fix="fill the 'parent' column for prompts derived from another prompt")
    cells = _cell_means(df[["task", "model", "query_id", "prompt_id", "score", "w"]])
    return build_units(cells, prompts, {}, links.reset_index(drop=True), cfg, source)


# ---------------------------------------------------------------------------------------- builder


def _all_pairs(prompt_ids: list[str]) -> list[tuple[str, str]]:
    return [(a, b) for a in prompt_ids for b in prompt_ids if a != b]


def _cell_edits(task: str, model: str, prompt_ids: list[str], lineage: pd.DataFrame | None, cfg: PairConfig,
                source: str) -> pd.DataFrame:
    use_lineage = cfg.pairs == "lineage" or (cfg.pairs == "auto" and lineage is not None)
    if use_lineage:
        if lineage is None:
            raise DataError("pairs='lineage' needs parent links", source=source, column="parent_id",
                            fix="add a parent_id column, or use pairs='all'")
        sel = lineage[(lineage["task"] == task) & (lineage["model"] == model)]
        known = set(prompt_ids)
        sel = sel[sel["parent_id"].isin(known) & sel["child_id"].isin(known)]
        return sel[["parent_id", "child_id", "operator", "family", "second_parent"]].reset_index(drop=True)
    pairs = _all_pairs(prompt_ids)
    return pd.DataFrame({"parent_id": [a for a, _ in pairs], "child_id": [b for _, b in pairs],
                         "operator": None, "family": None, "second_parent": None})


def _subsample(edits: pd.DataFrame, cfg: PairConfig, salt: int) -> pd.DataFrame:
    cap = cfg.max_edits_per_cell
    if cap is None or len(edits) <= cap:
        return edits
    rng = np.random.default_rng([cfg.seed, salt])
    return edits.iloc[np.sort(rng.choice(len(edits), size=cap, replace=False))].reset_index(drop=True)


def _declared(operator: object, family: object, second_parent: object) -> dict[str, int]:
    """Family a trace declares for an edit: ``family`` or an operator name containing one."""
    out: dict[str, int] = {}
    fam = str(family) if family is not None and not pd.isna(family) else None
    op = str(operator).lower() if operator is not None and not pd.isna(operator) else ""
    if fam is None:
        fam = next((f for f in FAMILIES if f in op), None)
    if fam in EDIT_FAMILIES:
        out[fam] = -1 if op.startswith("remove") else 1
    if second_parent is not None and not pd.isna(second_parent) or op in ("recombine", "crossover"):
        out["recombination"] = 1
    return out


def _edit_row(parent: str, child: str, cfg: PairConfig) -> tuple[dict, dict]:
    """Detected families, surface changes and parent features of one edit, and its motifs."""
    rec = extract_edit(parent, child, cfg.detector, cfg.motif_max_n)
    fams = dict(rec.families) if cfg.families_from != "declared" else dict.fromkeys(FAMILIES, 0)
    row = {f"fam_{f}": fams[f] for f in FAMILIES}
    row.update(rec.surface)
    pres = family_presence(parent, cfg.detector)
    row.update({f"par_has_{f}": pres[f] for f in FAMILIES})
    row["par_log_words"] = math.log1p(len(parent.split()))
    return row, rec.motifs


def _edit_features(e: object, prompts: dict[str, str], cfg: PairConfig,
                   cache: dict[tuple[str, str], tuple[dict, dict]]) -> tuple[dict, dict]:
    """:func:`_edit_row` (cached by text pair) plus the family the trace declares for edit ``e``."""
    key = (prompts[e.parent_id], prompts[e.child_id])
    if key not in cache:
        cache[key] = _edit_row(*key, cfg)
    row, mot = dict(cache[key][0]), cache[key][1]
    if cfg.families_from != "detect":
        for fam, sign in _declared(e.operator, e.family, e.second_parent).items():
            row[f"fam_{fam}"] = row[f"fam_{fam}"] or sign
    return row, mot


def _query_features(query_ids: np.ndarray, queries: dict[str, str]) -> np.ndarray:
    feats = np.zeros((len(query_ids), 2))
    for i, q in enumerate(query_ids):
        text = queries.get(str(q), "")
        feats[i] = (math.log1p(len(text)), math.log1p(len(_NUM.findall(text))))
    return feats


def build_units(cells: pd.DataFrame, prompts: dict[str, str], queries: dict[str, str],
                lineage: pd.DataFrame | None, cfg: PairConfig, source: str = "<table>") -> PairedUnits:
    """Form edits per ``(task, model)`` and expand each into units over the queries both prompts share.

    ``cells`` has one row per ``(task, model, query_id, prompt_id)`` with mean score ``y`` and
    weight ``w``; ``prompts`` maps prompt id to text; ``queries`` query id to text (may be empty).
    """
    query_ids, qcode = np.unique(cells["query_id"].astype(str).to_numpy(), return_inverse=True)
    cells = cells.assign(qcode=qcode)
    rows, motifs, parts = [], [], []
    cache: dict[tuple[str, str], tuple[dict, dict]] = {}
    for salt, ((task, model), cell) in enumerate(cells.groupby(["task", "model"], sort=True)):
        pids = list(dict.fromkeys(cell["prompt_id"].astype(str)))
        mat, wmat, qidx = _cell_matrix(cell, pids)
        quality = dict(zip(pids, np.nanmean(mat, axis=0)))
        edits = _subsample(_cell_edits(task, model, pids, lineage, cfg, source), cfg, salt)
        col = {p: j for j, p in enumerate(pids)}
        for e in edits.itertuples(index=False):
            a, b = col[e.parent_id], col[e.child_id]
            both = ~np.isnan(mat[:, a]) & ~np.isnan(mat[:, b])
            if not both.any():
                continue
            row, mot = _edit_features(e, prompts, cfg, cache)
            row.update(task=task, model=model, parent_id=e.parent_id, child_id=e.child_id,
                       operator=e.operator, par_quality=float(quality[e.parent_id]))
            parts.append((len(rows), qidx[both], mat[both, a], mat[both, b], wmat[both, a] * wmat[both, b]))
            rows.append(row)
            motifs.append(mot)
    if not rows:
        raise DataError("no edit has a query that both its prompts were scored on", source=source,
                        fix="give at least two prompts evaluated on common queries (or parent/child scores)")
    return _assemble(rows, motifs, parts, query_ids, queries, prompts)


def _cell_matrix(cell: pd.DataFrame, pids: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(queries x prompts) matrices of mean score (NaN where not run) and weight, and query codes."""
    qidx, qrow = np.unique(cell["qcode"].to_numpy(), return_inverse=True)
    col = {p: j for j, p in enumerate(pids)}
    pcol = cell["prompt_id"].astype(str).map(col).to_numpy()
    mat = np.full((len(qidx), len(pids)), np.nan)
    wmat = np.ones_like(mat)
    mat[qrow, pcol] = cell["y"].to_numpy(dtype=float)
    wmat[qrow, pcol] = cell["w"].to_numpy(dtype=float)
    return mat, wmat, qidx


def _assemble(rows: list[dict], motifs: list[dict], parts: list[tuple], query_ids: np.ndarray,
              queries: dict[str, str], prompts: dict[str, str]) -> PairedUnits:
    edits = pd.DataFrame(rows)
    edits["parent_text"] = edits["parent_id"].map(prompts)
    edits["child_text"] = edits["child_id"].map(prompts)
    front = ["task", "model", "parent_id", "child_id", "operator", "parent_text", "child_text"]
    edits = edits[front + list(FAM_COLS) + list(SURFACE_FEATURES)
                  + ["par_quality", "par_log_words"] + [f"par_has_{f}" for f in FAMILIES]]
    unit_edit = np.concatenate([np.full(len(p[1]), p[0], dtype=np.int64) for p in parts])
    cat = [np.concatenate([p[k] for p in parts]) for k in (1, 2, 3, 4)]
    return PairedUnits(edits, motifs, unit_edit, cat[0].astype(np.int64), cat[1], cat[2], cat[3],
                       query_ids, _query_features(query_ids, queries))


__all__ = [
    "FAMILIES",
    "FAM_COLS",
    "PairConfig",
    "PairedUnits",
    "TRAJECTORY_ALIASES",
    "build_units",
    "read_trajectories",
    "units_from_trajectories",
    "units_from_triplets",
]
