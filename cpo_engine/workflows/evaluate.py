"""`cpo evaluate`: the causal reward model vs baselines on a full outcome grid with injected confounding."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from cpo_engine.exceptions import ConfigError
from cpo_engine.workflows.common import Representer, load_data
from cpo_engine.workflows.config import EvaluateConfig


def evaluate(cfg: EvaluateConfig, progress: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Run the evaluation over seeds (resumable: each finished seed is saved under OUT/seeds) and write
    evaluation.json / .md / .png to OUT; returns the result with the written paths."""
    from cpo_engine.causal import evaluate as run_evaluation
    from cpo_engine.causal import write_evaluation

    if not cfg.out:
        raise ConfigError("evaluate needs an output folder: pass --out DIR")
    table, info = load_data(cfg.data)
    reps = Representer(cfg.embed).represent(table, cfg.pca)
    result = run_evaluation(table, cfg.evaluation, causal=cfg.causal, ope=cfg.ope, representations=reps, progress=progress,
                            checkpoint_dir=Path(cfg.out) / "seeds")
    result["settings"]["data"] = info
    result["paths"] = write_evaluation(result, Path(cfg.out))
    return result


__all__ = ["evaluate"]
