"""`cpo fit`: load -> represent -> fit the causal reward model -> save a model bundle."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from cpo_engine.exceptions import ConfigError
from cpo_engine.utils import atomic_write_json
from cpo_engine.workflows.common import (Representer, check_cv, load_data, open_run, preflight, scores_and_weights,
                                         write_features)
from cpo_engine.workflows.config import FitConfig


#: What `cpo fit` writes in its output folder (cleared when a later fit reuses the folder).
FIT_OUTPUTS = ("features", "model", "diagnostics.json")


@dataclass
class FitResult:
    out: Path
    bundle: Path
    model: Any
    representations: Any


def fit(cfg: FitConfig) -> FitResult:
    """Fit on every row of the table (query-grouped folds, the ``weight`` column when present) and write
    OUT/model (the bundle), OUT/features and OUT/diagnostics.json."""
    from cpo_engine.workflows.bundle import save_bundle
    from cpo_engine.workflows.policy import save_fitted_policy

    if not cfg.out:
        raise ConfigError("fit needs an output folder: pass --out DIR")
    out = Path(cfg.out)
    preflight(cfg)
    with open_run(out, cfg, "fit", FIT_OUTPUTS) as manifest:
        table, info = load_data(cfg.data)
        manifest.data["data"] = info
        check_cv(cfg.causal.cv, len(pc.unique(table["query_id"])), info["path"])  # before the embedding
        reps = Representer(cfg.embed).represent(table, cfg.pca)
        y, w = scores_and_weights(table)
        model = cfg.causal.make_model(device=cfg.device, random_state=cfg.seed)
        model.fit(y, reps.T[reps.row_prompt], X=reps.X[reps.row_query], groups=reps.row_query, sample_weight=w)
        write_features(reps, out / "features")
        bundle = save_bundle(out / "model", model, reps, cfg.embed, info, keep_residuals=cfg.keep_residuals)
        save_fitted_policy(bundle, model, reps, y, cfg.selection, cfg.policy, table, cfg.seed)  # what `cpo assign` applies
        atomic_write_json(out / "diagnostics.json", model.diagnostics_.to_dict())
        for key, path in (("features", out / "features"), ("model", bundle), ("diagnostics", out / "diagnostics.json")):
            manifest.output(key, path)
    return FitResult(out, bundle, model, reps)


__all__ = ["fit", "FitResult"]
