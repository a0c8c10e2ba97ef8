"""`cpo evaluate`: the causal reward model vs baselines on a full outcome grid with injected confounding,
the off-policy estimators checked against the truth, and (``sweep.axes``) data-budget curves."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cpo_engine.exceptions import ConfigError
from cpo_engine.workflows.common import Representer, load_data, now, refuse_other_kind, write_manifest
from cpo_engine.settings import EvaluateConfig


@dataclass
class EvaluateResult:
    """What `cpo evaluate` did: ``kind`` is 'evaluation' (OUT/evaluation.*) or 'budget' (the data-budget sweep,
    OUT/budget.*); ``result`` is what the JSON file holds; ``paths`` the files written."""

    out: Path
    kind: str
    result: dict[str, Any]
    paths: dict[str, Path]

    def markdown(self) -> str:
        """The tables printed on the console (and written to the .md file)."""
        if self.kind == "budget":
            from cpo_engine.causal.budget import budget_markdown

            return budget_markdown(self.result)
        from cpo_engine.causal.harness import table_markdown
        from cpo_engine.causal.ope_validation import ope_markdown

        return table_markdown(self.result) + ope_markdown(self.result.get("ope", {}))


def evaluate(cfg: EvaluateConfig, progress: Callable[[str], None] | None = print) -> EvaluateResult:
    """Run the evaluation over seeds (resumable: each finished seed is saved under OUT/seeds) and write
    evaluation.json / .md / .png and a manifest (kind 'evaluate') to OUT. With ``cfg.sweep.axes``, run the
    data-budget sweep instead (OUT/budget.*, checkpoints in OUT/points)."""
    from cpo_engine.causal import evaluate as run_evaluation
    from cpo_engine.causal import write_evaluation

    if not cfg.out:
        raise ConfigError("evaluate needs an output folder: pass --out DIR")
    from cpo_engine.data.storage import is_remote

    if is_remote(cfg.out):  # written locally, uploaded when it ends ok (manifest last)
        from cpo_engine.workflows.common import staged

        return staged(cfg, lambda local: evaluate(local, progress))
    started = now()
    refuse_other_kind(cfg.out, "evaluate")
    table, info = load_data(cfg.data)
    _check_cv(cfg, table, info["path"])  # before the encoder is loaded and the texts embedded
    rep = Representer(cfg.embed)
    reps = rep.represent(table, cfg.pca)
    if cfg.sweep.axes:
        result, kind = budget(cfg, table, info, rep, reps, progress), "budget"
    else:
        result, kind = run_evaluation(table, cfg.evaluation, causal=cfg.causal, ope=cfg.ope, representations=reps,
                                      progress=progress, checkpoint_dir=Path(cfg.out) / "seeds"), "evaluation"
        result["settings"]["data"] = info
        result["paths"] = write_evaluation(result, Path(cfg.out))
    paths = result.pop("paths")
    write_manifest(cfg.out, "evaluate", cfg, paths, started_at=started, data=info, result=kind)
    return EvaluateResult(Path(cfg.out), kind, result, paths)


def _check_cv(cfg: EvaluateConfig, table: Any, source: str) -> None:
    """``causal.cv`` against the fewest training queries any repetition (or sweep point) fits on: the split of
    each seed (as the harness draws it, on the queries' texts), capped by ``evaluation.train_queries`` and the
    sweep's train_queries values. As in `cpo run`/`fit`/`ope`, a ConfigError before any embedding."""
    import numpy as np

    from cpo_engine.data.grid import split_queries
    from cpo_engine.embedding.representations import unique_texts
    from cpo_engine.workflows.common import check_cv

    ev = cfg.evaluation
    _, texts, _ = unique_texts(table, "query_id", "query_text")
    n_train = min(len(split_queries(texts, ev.test_fraction, np.random.default_rng(seed))[0])
                  for seed in range(ev.first_seed, ev.first_seed + max(ev.seeds, 1)))
    caps = {"evaluation.train_queries": ev.train_queries}
    if "train_queries" in (cfg.sweep.axes or []) and cfg.sweep.train_queries:
        caps["sweep.train_queries"] = min(cfg.sweep.train_queries)
    held_out = f" ({len(texts)} queries, the rest held out by evaluation.test_fraction={ev.test_fraction})"
    for key, cap in caps.items():
        if cap is not None and cap < n_train:
            n_train, held_out = cap, f" ({key} = {cap})"
    check_cv(cfg.causal.cv, n_train, source, held_out)


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


__all__ = ["EvaluateResult", "budget", "evaluate"]
