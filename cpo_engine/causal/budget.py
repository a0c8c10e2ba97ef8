"""Data-budget curves (part of `cpo evaluate`): how policy value, ranking quality (tau-b) and off-policy
evaluation error move with the number of training queries, the logged prompts per query and the query
/ prompt PCA sizes, for the causal model, the non-causal outcome model and static choices.

Each point of a sweep is one evaluation (:func:`cpo_engine.causal.harness.evaluate`) with one setting
changed from the base configuration, over the same seeds, checkpointed per point, so an interrupted
sweep resumes. PCA sizes need new representations: the caller passes ``represent(query_components,
prompt_components)``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from cpo_engine.causal.config import CausalConfig
from cpo_engine.causal.evaluation import EvaluationConfig
from cpo_engine.causal.ope import OPEConfig
from cpo_engine.exceptions import ConfigError

AXES = ("train_queries", "logged_per_query", "query_components", "prompt_components")
AXIS_LABELS = {"train_queries": "training triplets (train queries x logged prompts per query)",
               "logged_per_query": "logged prompts per training query",
               "query_components": "query PCA components (X)", "prompt_components": "prompt PCA components (T)"}
CURVES = {"causal_dml": "causal DML, per query", "causal_dml_static": "causal DML, best static",
          "outcome_model": "non-causal outcome model, per query", "static_naive": "best static, naive logged mean",
          "oracle_static": "oracle best static"}
REWARD_MODELS = {"causal": "causal DML", "non_causal": "non-causal outcome model", "static": "static (logged means)"}
FORMAT = "cpo-budget/1"


@dataclass
class SweepConfig:
    """Which data-budget curves `cpo evaluate` draws (none by default)."""

    axes: list[str] | None = None
    """Axes to sweep, from 'train_queries', 'logged_per_query', 'query_components', 'prompt_components'
    (e.g. --sweep train_queries,logged_per_query); empty: no sweep, the plain evaluation runs."""
    train_queries: list[int] | None = field(default_factory=lambda: [125, 250, 500, 1000, 2000])
    """Training query counts (the whole train split is always added)."""
    logged_per_query: list[int] | None = field(default_factory=lambda: [1, 2, 4, 8])
    """Logged prompts per training query."""
    query_components: list[int] | None = field(default_factory=lambda: [2, 4, 8, 16, 32, 64])
    """Query PCA sizes."""
    prompt_components: list[int] | None = field(default_factory=lambda: [2, 4, 8, 15])
    """Prompt PCA sizes (capped at n_prompts - 1)."""
    seeds: int = 4
    """Repetitions per point (the base evaluation's first_seed onward)."""
    ope_draws: int = 3
    """Held-out log draws per repetition for the OPE error."""

    def __post_init__(self) -> None:
        bad = [a for a in self.axes or [] if a not in AXES]
        if bad:
            raise ConfigError(f"sweep.axes: unknown axis {bad}; choose from {', '.join(AXES)}")
        if self.seeds < 1 or self.ope_draws < 1:
            raise ConfigError("sweep.seeds and sweep.ope_draws must be >= 1")
        for axis in AXES:
            values = getattr(self, axis) or []
            if any((not isinstance(v, int)) or v < 1 for v in values):
                raise ConfigError(f"sweep.{axis} must be positive integers, got {values}")


@dataclass
class Point:
    """One evaluation of a sweep: the axis it belongs to, its value and the settings it runs with."""

    axis: str
    value: int | None
    evaluation: EvaluationConfig
    query_components: int
    prompt_components: int

    @property
    def key(self) -> str:
        e = self.evaluation
        return f"n{e.train_queries or 'all'}_k{e.logged_per_query}_x{self.query_components}_t{self.prompt_components}"


def sweep_points(sweep: SweepConfig, base: EvaluationConfig, query_components: int,
                 prompt_components: int) -> list[Point]:
    """Every point of every requested axis (each axis includes the base value)."""
    base = replace(base, seeds=sweep.seeds, ope_draws=sweep.ope_draws, with_forest=False)
    points = []
    for axis in sweep.axes or []:
        values = sorted(set(getattr(sweep, axis) or []))
        if axis == "train_queries":
            points += [Point(axis, v, replace(base, train_queries=v), query_components, prompt_components)
                       for v in values] + [Point(axis, None, replace(base, train_queries=None), query_components,
                                                 prompt_components)]
        elif axis == "logged_per_query":
            points += [Point(axis, v, replace(base, logged_per_query=v), query_components, prompt_components)
                       for v in sorted(set(values) | {base.logged_per_query})]
        elif axis == "query_components":
            points += [Point(axis, v, base, v, prompt_components) for v in sorted(set(values) | {query_components})]
        else:
            points += [Point(axis, v, base, query_components, v) for v in sorted(set(values) | {prompt_components})]
    return points


def run_sweep(table: Any, sweep: SweepConfig, base: EvaluationConfig, represent: Callable[[int, int], Any], *,
              query_components: int, prompt_components: int, causal: CausalConfig | None = None,
              ope: OPEConfig | None = None, checkpoint_dir: Any = None,
              progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Evaluate every point of the sweep and collect its curves.

    Parameters
    ----------
    table : pyarrow.Table
        A full outcome grid.
    sweep : SweepConfig
        Axes, values, seeds.
    base : EvaluationConfig
        Every other setting (confounding, strength, exploration, ...).
    represent : callable (query_components, prompt_components) -> Representations
        Builds (or returns cached) representations of ``table`` at the given PCA sizes.
    checkpoint_dir : path, optional
        Seeds are checkpointed per point under it (``<dir>/<point key>/``).
    """
    from cpo_engine.causal.harness import evaluate

    points = sweep_points(sweep, base, query_components, prompt_components)
    results: dict[str, dict] = {}
    for p in points:
        if p.key not in results:
            reps = represent(p.query_components, p.prompt_components)
            folder = None if checkpoint_dir is None else Path(checkpoint_dir) / p.key
            results[p.key] = evaluate(table, p.evaluation, causal=causal, ope=ope, representations=reps,
                                      checkpoint_dir=folder)
            if progress:
                m = results[p.key]["methods"]
                progress(f"{p.key}: causal {m['causal_dml']['policy_value']['mean']:.4f} "
                         f"outcome {m['outcome_model']['policy_value']['mean']:.4f} "
                         f"static {m['static_naive']['policy_value']['mean']:.4f}")
    curves = {axis: [_point_row(p, results[p.key]) for p in points if p.axis == axis] for axis in sweep.axes or []}
    return {"format": FORMAT, "settings": {"base": _jsonable(base), "sweep": _jsonable(sweep),
                                           "query_components": query_components,
                                           "prompt_components": prompt_components,
                                           "causal": _jsonable(causal or CausalConfig()), "ope": _jsonable(ope or OPEConfig())},
            "curves": curves}


def _jsonable(cfg: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(cfg)


def _point_row(p: Point, result: dict[str, Any]) -> dict[str, Any]:
    per_seed = result["per_seed"]
    reps = result["settings"]["representations"]
    row: dict[str, Any] = {
        "value": p.value, "key": p.key,
        "n_train_queries": float(np.mean([s["n_train_queries"] for s in per_seed])),
        "logged_rows": float(np.mean([s["logged_rows"] for s in per_seed])),
        "logged_per_query": p.evaluation.logged_per_query,
        "query_components": reps.get("query_components", p.query_components),
        "prompt_components": reps.get("prompt_components", p.prompt_components),
        "methods": {m: {k: result["methods"][m][k] for k in ("policy_value", "tau_b")} for m in CURVES},
    }
    ope = result.get("ope") or {}
    if ope:
        row["ope"] = {rm: {e: {k: st[e][k] for k in ("bias", "rmse", "coverage")} for e in ("dm", "dr")}
                      for rm, st in ope.get("by_reward_model", {}).items()}
    return row


def _x(axis: str, row: dict[str, Any]) -> float:
    return {"train_queries": row["logged_rows"], "logged_per_query": row["logged_per_query"],
            "query_components": row["query_components"], "prompt_components": row["prompt_components"]}[axis]


def budget_markdown(result: dict[str, Any]) -> str:
    """One table per axis: policy value and tau-b per method, OPE RMSE (DR, DM) per reward model."""
    base = result["settings"]["base"]
    out = [(f"Data-budget curves: confounding={base['confounding']} strength={base['strength']} "
            f"exploration={base['exploration']}, {result['settings']['sweep']['seeds']} seeds per point "
            "(mean [95% CI over seeds])\n")]
    for axis, rows in result["curves"].items():
        out += [f"\n### {AXIS_LABELS[axis]}\n",
                "| x | " + " | ".join(f"{CURVES[m]}: value / tau-b" for m in CURVES) + " | OPE RMSE, DR / DM: "
                + " / ".join(REWARD_MODELS.values()) + " |",
                "|---|" + "---|" * (len(CURVES) + 1)]
        for r in rows:
            cells = [f"{_ci(r['methods'][m]['policy_value'])} / {r['methods'][m]['tau_b']['mean']:.3f}" for m in CURVES]
            ope = r.get("ope", {})
            err = "; ".join(f"{ope[rm]['dr']['rmse']:.3f} / {ope[rm]['dm']['rmse']:.3f}" for rm in REWARD_MODELS
                            if rm in ope)
            out.append(f"| {_x(axis, r):g} | " + " | ".join(cells) + f" | {err} |")
    return "\n".join(out) + "\n"


def _ci(ci: dict[str, float]) -> str:
    return f"{ci['mean']:.3f} [{ci['ci_low']:.3f}, {ci['ci_high']:.3f}]"


def budget_plot(result: dict[str, Any], axis: str) -> bytes:
    """Policy value, tau-b (with 95% CIs over seeds) and OPE RMSE along one axis, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cpo_engine.causal.harness import figure_png

    rows = result["curves"][axis]
    x = np.array([_x(axis, r) for r in rows], dtype=float)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    for metric, ax in zip(("policy_value", "tau_b"), axes[:2]):
        for m, label in CURVES.items():
            ci = [r["methods"][m][metric] for r in rows]
            mean = np.array([c["mean"] for c in ci], dtype=float)
            lo, hi = np.array([c["ci_low"] for c in ci], float), np.array([c["ci_high"] for c in ci], float)
            style = "--" if m == "oracle_static" else "-"
            ax.plot(x, mean, style, marker="o", label=label)
            ax.fill_between(x, lo, hi, alpha=0.15)
        ax.set_title(metric.replace("_", " "))
    for rm, label in REWARD_MODELS.items():
        for est, style in (("dr", "-"), ("dm", ":")):
            y = [r.get("ope", {}).get(rm, {}).get(est, {}).get("rmse", np.nan) for r in rows]
            axes[2].plot(x, y, style, marker="o", label=f"{est.upper()}, {label}")
    axes[2].set_title("OPE error of the policies' values (RMSE)")
    for ax in axes:
        ax.set_xlabel(AXIS_LABELS[axis])
        if axis in ("train_queries", "query_components", "prompt_components", "logged_per_query"):
            ax.set_xscale("log", base=2)
    axes[0].legend(fontsize=7)
    axes[2].legend(fontsize=7)
    base = result["settings"]["base"]
    fig.suptitle(f"confounding={base['confounding']} strength={base['strength']} exploration={base['exploration']}, "
                 f"{result['settings']['sweep']['seeds']} seeds per point")
    return figure_png(fig, dpi=100)


def write_budget(result: dict[str, Any], out: Any) -> dict[str, Path]:
    """Write budget.json, budget.md and one budget_<axis>.png per axis into ``out`` (atomically)."""
    from cpo_engine.causal.harness import _clean
    from cpo_engine.utils import atomic_write_bytes, atomic_write_json, atomic_write_text, json_default_str

    out = Path(out)
    paths = {"json": out / "budget.json", "table": out / "budget.md"}
    atomic_write_json(paths["json"], _clean(json.loads(json.dumps(result, default=json_default_str))))
    atomic_write_text(paths["table"], budget_markdown(result))
    for axis in result["curves"]:
        paths[f"plot_{axis}"] = atomic_write_bytes(out / f"budget_{axis}.png", budget_plot(result, axis))
    return paths


__all__ = ["AXES", "Point", "SweepConfig", "budget_markdown", "budget_plot", "run_sweep", "sweep_points",
           "write_budget"]
