"""`cpo evaluate`: the causal reward model vs baselines on a full outcome grid with injected confounding,
the off-policy estimators checked against the truth, and (``sweep.axes``) data-budget curves."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from cpo_engine.exceptions import ConfigError
from cpo_engine.workflows.common import Representer, load_data
from cpo_engine.workflows.config import EvaluateConfig


def evaluate(cfg: EvaluateConfig, progress: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Run the evaluation over seeds (resumable: each finished seed is saved under OUT/seeds) and write
    evaluation.json / .md / .png to OUT; returns the result with the written paths. With
    ``cfg.sweep.axes``, run the data-budget sweep instead (OUT/budget.*, checkpoints in OUT/points)."""
    from cpo_engine.causal import evaluate as run_evaluation
    from cpo_engine.causal import write_evaluation

    if not cfg.out:
        raise ConfigError("evaluate needs an output folder: pass --out DIR")
    table, info = load_data(cfg.data)
    rep = Representer(cfg.embed)
    reps = rep.represent(table, cfg.pca)
    if cfg.sweep.axes:
        return budget(cfg, table, info, rep, reps, progress)
    result = run_evaluation(table, cfg.evaluation, causal=cfg.causal, ope=cfg.ope, representations=reps,
                            progress=progress, checkpoint_dir=Path(cfg.out) / "seeds")
    result["settings"]["data"] = info
    result["paths"] = write_evaluation(result, Path(cfg.out))
    return result


def budget(cfg: EvaluateConfig, table: Any, info: dict[str, Any], rep: Representer, base_reps: Any,
           progress: Callable[[str], None] | None) -> dict[str, Any]:
    """The data-budget sweep: one evaluation per point, representations rebuilt per PCA size (the
    embeddings come from the cache)."""
    from cpo_engine.causal.budget import run_sweep, write_budget

    summary = base_reps.summary()
    cache = {(summary["query_components"], summary["prompt_components"]): base_reps}

    def represent(query_components: int, prompt_components: int) -> Any:
        key = (query_components, prompt_components)
        if key not in cache:
            pca = replace(cfg.pca, query_components=query_components, prompt_components=prompt_components)
            cache[key] = rep.represent(table, pca, show_progress=False)
        return cache[key]

    result = run_sweep(table, cfg.sweep, cfg.evaluation, represent, query_components=summary["query_components"],
                       prompt_components=summary["prompt_components"], causal=cfg.causal, ope=cfg.ope,
                       checkpoint_dir=Path(cfg.out) / "points", progress=progress)
    result["settings"]["data"] = info
    result["paths"] = write_budget(result, Path(cfg.out))
    return result


__all__ = ["budget", "evaluate"]
