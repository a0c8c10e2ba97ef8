"""Edit priors: per-task operator weights for the edit-operator proposer, from estimated effects.

File format (``docs/ARCHITECTURE.md``)::

    {"format": "cpo-edit-prior/1",
     "default": {family: weight},          # tasks not listed
     "tasks": {task: {family: weight}},
     "meta": {...}}                          # provenance; readers ignore it

A weight is relative: 1 is neutral (no evidence either way), above 1 favours proposing edits that
*add* the family, below 1 disfavours them (an operator that removes a family uses the inverse).
Every family of ``cpo_engine.taxonomy.EDIT_FAMILIES`` is listed.

Weights are ``exp(shrunk effect / temperature)`` clipped to ``[1/max_ratio, max_ratio]``. The shrunk
effect is the posterior mean under a normal prior centred on 0 whose variance ``tau^2`` is fitted
across all estimated cells (method of moments): noisy or unsupported effects move the weight towards
1, and if the effects are no more spread than their standard errors, all weights are 1.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cpo_engine.edits.config import PriorConfig  # re-exported: defined in the light config module
from cpo_engine.exceptions import DataError
from cpo_engine.taxonomy import EDIT_FAMILIES

PRIOR_FORMAT = "cpo-edit-prior/1"


def shrink(effect: np.ndarray, se: np.ndarray) -> tuple[np.ndarray, float]:
    """Empirical-Bayes posterior means ``effect * tau^2 / (tau^2 + se^2)`` and the fitted ``tau^2``."""
    ok = np.isfinite(effect) & np.isfinite(se)
    if not ok.any():
        return np.zeros_like(effect), 0.0
    tau2 = max(0.0, float(np.mean(effect[ok] ** 2) - np.mean(se[ok] ** 2)))
    out = np.where(ok, effect * tau2 / (tau2 + np.where(ok, se, 1.0) ** 2 + 1e-300), 0.0)
    return out, tau2


def _weights(shrunk: dict[str, float], cfg: PriorConfig) -> dict[str, float]:
    # Clip the exponent, not the weight: same result, and no overflow for scores on a large scale.
    cap = math.log(cfg.max_ratio)
    return {f: round(math.exp(min(cap, max(-cap, shrunk.get(f, 0.0) / cfg.temperature))), 4) for f in EDIT_FAMILIES}


def edit_prior(families: pd.DataFrame, config: PriorConfig | None = None) -> dict[str, Any]:
    """Build the edit-prior document from an :class:`~cpo_engine.edits.analysis.EditReport` family table.

    Task weights use the task's estimated rows (models pooled by inverse variance); ``default`` uses
    every estimated row pooled by inverse variance.
    """
    cfg = config or PriorConfig()
    est = families[families["status"] == "estimated"].copy()
    est["shrunk"], tau2 = shrink(est["effect"].to_numpy(dtype=float), est["se"].to_numpy(dtype=float))
    tasks = {str(t): _weights(_pooled(g), cfg) for t, g in est.groupby("task", sort=True)}
    default = _weights(_pooled(est), cfg) if len(est) else dict.fromkeys(EDIT_FAMILIES, 1.0)
    meta = {"tau2": tau2, "temperature": cfg.temperature, "max_ratio": cfg.max_ratio,
            "effects": {str(t): {r.family: [round(float(r.effect), 5), round(float(r.se), 5)]
                                 for r in g.itertuples()} for t, g in est.groupby("task", sort=True)}}
    return {"format": PRIOR_FORMAT, "default": default, "tasks": tasks, "meta": meta}


def _pooled(rows: pd.DataFrame) -> dict[str, float]:
    """Inverse-variance pooled shrunk effect per family."""
    out = {}
    for fam, g in rows.groupby("family"):
        w = 1.0 / np.clip(g["se"].to_numpy(dtype=float), 1e-9, None) ** 2
        out[str(fam)] = float((w * g["shrunk"].to_numpy(dtype=float)).sum() / w.sum())
    return out


def validate_edit_prior(doc: Any, source: str = "<edit prior>") -> dict[str, Any]:
    """Check an edit-prior document; returns it, or raises :class:`DataError` saying what to fix."""
    fix = f'write {{"format": "{PRIOR_FORMAT}", "default": {{family: weight}}, "tasks": {{task: {{...}}}}}}'
    if not isinstance(doc, dict) or doc.get("format") != PRIOR_FORMAT:
        raise DataError(f"not an edit prior (format must be '{PRIOR_FORMAT}')", source=source, fix=fix)
    tables = [("default", doc.get("default"))] + [(f"tasks.{t}", w) for t, w in (doc.get("tasks") or {}).items()]
    for where, table in tables:
        if not isinstance(table, dict):
            raise DataError(f"'{where}' must map family names to weights", source=source, fix=fix)
        for fam, w in table.items():
            if fam not in EDIT_FAMILIES:
                raise DataError(f"'{where}' has unknown family '{fam}'", source=source,
                                fix=f"use names from cpo_engine.taxonomy: {sorted(EDIT_FAMILIES)}")
            if not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                raise DataError(f"'{where}.{fam}' must be a finite number >= 0, got {w!r}", source=source, fix=fix)
    return doc


def load_edit_prior(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate an edit-prior JSON file."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError("the file does not exist", source=str(p),
                        fix="pass the edit_prior.json `cpo edits` wrote") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON ({exc.msg} at line {exc.lineno})", source=str(p),
                        fix="regenerate it with `cpo edits`") from None
    return validate_edit_prior(doc, str(p))


def prior_weights(doc: dict[str, Any], task: str | None) -> dict[str, float]:
    """Weights for ``task`` (falling back to ``default``, then 1.0 for families not listed)."""
    table = (doc.get("tasks") or {}).get(task or "", doc.get("default") or {})
    return {f: float(table.get(f, (doc.get("default") or {}).get(f, 1.0))) for f in EDIT_FAMILIES}


def default_prior_path(task_group: str = "math") -> Path:
    """The edit prior shipped with the package (built from the bundled dev data)."""
    return Path(__file__).resolve().parent.parent / "resources" / f"edit_prior_{task_group}.json"


@dataclass(frozen=True)
class EditPrior:
    """Per-task sampling weights of edit families, as the edit-operator proposer reads them.

    The in-memory form of a ``cpo-edit-prior/1`` document. A weight of 1 is neutral; above 1 the
    family's operators are proposed more often, below 1 less (0 never). Operators that remove a
    family's kind of instruction get the inverse weight.

    Attributes
    ----------
    default : dict of str to float
        Weights for tasks not listed in ``tasks``.
    tasks : dict of str to dict of str to float
        Weights per task.
    source : str
        Where the prior came from (a file path or ``"<memory>"``), for messages.
    """

    default: dict[str, float] = field(default_factory=dict)
    tasks: dict[str, dict[str, float]] = field(default_factory=dict)
    source: str = "<memory>"

    def weights(self, task: str | None) -> dict[str, float]:
        """Family weights for ``task``: its table if listed, else ``default``; 1.0 where unlisted."""
        return prior_weights({"default": self.default, "tasks": self.tasks}, task)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "EditPrior":
        """Read and validate an edit-prior JSON file; errors name the file and the bad key."""
        return cls.from_dict(load_edit_prior(path), source=str(path))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "<memory>") -> "EditPrior":
        """Validate a document (:func:`validate_edit_prior`) and keep its weight tables."""
        doc = validate_edit_prior(raw, source)
        return cls(default={k: float(v) for k, v in (doc.get("default") or {}).items()},
                   tasks={t: {k: float(v) for k, v in w.items()} for t, w in (doc.get("tasks") or {}).items()},
                   source=source)


__all__ = ["PRIOR_FORMAT", "EditPrior", "PriorConfig", "default_prior_path", "edit_prior", "load_edit_prior",
           "prior_weights", "shrink", "validate_edit_prior"]
