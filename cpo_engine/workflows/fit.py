"""`cpo fit`: load -> represent -> fit the causal reward model -> save a model bundle; and
:func:`fit_policy`, the same fit in memory, ending in a :class:`~cpo_engine.policy.policy.Policy`."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cpo_engine.data.config import DataConfig
from cpo_engine.exceptions import ConfigError
from cpo_engine.utils import atomic_write_json
from cpo_engine.workflows.common import (Representer, check_cv, load_data, name_prompts, open_run, preflight,
                                         scores_and_weights, write_features)
from cpo_engine.settings import FitConfig

if TYPE_CHECKING:
    from cpo_engine.causal.dml import CausalRewardModel
    from cpo_engine.embedding.representations import Representations


#: What `cpo fit` writes in its output folder (cleared when a later fit reuses the folder).
FIT_OUTPUTS = ("features", "model", "diagnostics.json")


@dataclass
class FitResult:
    out: Path
    bundle: Path
    model: CausalRewardModel
    representations: Representations


def fit_model(cfg: FitConfig, table: pa.Table, source: str, representer: Representer | None = None,
              show_progress: bool = True) -> tuple[Any, Any, np.ndarray]:
    """The fit every `cpo fit` and :func:`fit_policy` run: representations of a validated table (the
    cross-fitting folds checked first), then the causal reward model on every row (query-grouped folds, the
    ``weight`` column when present). Returns ``(model, representations, scores)``; writes nothing."""
    check_cv(cfg.causal.cv, len(pc.unique(table["query_id"])), source)  # before the embedding
    reps = (representer or Representer(cfg.embed)).represent(table, cfg.pca, show_progress=show_progress)
    y, w = scores_and_weights(table)
    model = cfg.causal.make_model(device=cfg.device, random_state=cfg.seed)
    model.fit(y, reps.T[reps.row_prompt], X=reps.X[reps.row_query], groups=reps.row_query, sample_weight=w)
    return name_prompts(model, reps), reps, y


def fit(cfg: FitConfig) -> FitResult:
    """Fit on every row of the table (query-grouped folds, the ``weight`` column when present) and write
    OUT/model (the bundle), OUT/features and OUT/diagnostics.json. ``cfg.data`` may be a table in memory
    (``FitConfig(data=df, out=...)``)."""
    from cpo_engine.policy.bundle import save_bundle
    from cpo_engine.policy.policy import save_fitted_policy

    if not cfg.out:
        raise ConfigError("fit needs an output folder: pass --out DIR")
    from cpo_engine.data.storage import is_remote
    from cpo_engine.workflows.common import staged

    if is_remote(cfg.out):
        return staged(cfg, fit)
    out = Path(cfg.out)
    preflight(cfg)
    with open_run(out, cfg, "fit", FIT_OUTPUTS) as manifest:
        table, info = load_data(cfg.data)
        manifest.data["data"] = info
        model, reps, y = fit_model(cfg, table, info["path"])
        write_features(reps, out / "features")
        bundle = save_bundle(out / "model", model, reps, cfg.embed, info, keep_residuals=cfg.keep_residuals)
        save_fitted_policy(bundle, model, reps, y, cfg.selection, cfg.policy, table, cfg.seed)  # what `cpo assign` applies
        atomic_write_json(out / "diagnostics.json", model.diagnostics_.to_dict())
        for key, path in (("features", out / "features"), ("model", bundle), ("diagnostics", out / "diagnostics.json")):
            manifest.output(key, path)
    return FitResult(out, bundle, model, reps)


def fit_policy(data: Any = None, config: FitConfig | None = None, *, cache_dir: str | Path | None = None,
               encoder: Any = None, show_progress: bool = False, warn: bool = True) -> Any:
    """A triplet table in memory -> fitted causal model -> :class:`~cpo_engine.policy.policy.Policy`, with
    no file written: the fit of `cpo fit` (:func:`fit_model`) and the policy `cpo fit` saves for `cpo assign`
    (the best static prompt chosen from the logs, the reliability checks), held in memory.

    Parameters
    ----------
    data : pandas DataFrame, pyarrow Table or path, optional
        Triplets (query_id, query_text, prompt_id, prompt_text, score, optional weight/propensity);
        default ``config.data`` (the bundled example when that is unset too).
    config : FitConfig, optional
        Embedding, PCA, causal, selection and policy settings (``out`` is ignored: to keep the model as a
        bundle for `cpo assign`, run :func:`fit` with ``FitConfig(data=df, out=DIR)``).
    cache_dir : path, optional
        Embedding cache folder; default None (no cache, nothing written), whatever ``config.embed.cache_dir``.
    encoder : Encoder, optional
        An already loaded encoder of ``config.embed.encoder`` (reused across calls).
    show_progress : bool
        Progress bars while embedding.
    warn : bool
        Raise the :class:`~cpo_engine.policy.policy.UnreliablePolicyWarning` when the checks fail.

    Returns
    -------
    Policy
        ``policy.assign(texts_or_table)`` recommends a prompt per new query (texts embedded with the same
        encoder and query PCA); ``policy.model`` is the fitted :class:`~cpo_engine.causal.CausalRewardModel`,
        whose ``summary()`` and ``prompt_effects()`` name the table's prompt ids.
    """
    from cpo_engine.embedding import text_embedder
    from cpo_engine.policy.policy import Policy, table_state

    cfg = config or FitConfig()
    if data is not None:
        cfg = replace(cfg, data=DataConfig.coerce(data))
    preflight(cfg)
    table, info = load_data(cfg.data)
    representer = Representer(cfg.embed, cache_dir=cache_dir, encoder=encoder)
    model, reps, y = fit_model(cfg, table, info["path"], representer, show_progress=show_progress)
    state = table_state(model, reps, y, cfg.selection, table, cfg.seed)
    features = text_embedder(representer.encoder, representer.cache, reps.query_pca,
                             reps.provenance.get("query_prefix") or "")
    policy = Policy(model, state, cfg.policy, query_features=features, device=cfg.device)
    if warn:
        policy.warn()
    return policy


__all__ = ["fit", "fit_model", "fit_policy", "FitResult"]
