"""Run the evaluation (:mod:`cpo_engine.causal.evaluation`) over seeds and write its outputs.

Python API: :func:`evaluate` (returns the JSON-able result) and :func:`write_evaluation` (writes
``evaluation.json``, ``evaluation.md`` and ``evaluation.png``). CLI: ``cpo evaluate``.
"""

from __future__ import annotations

import io
import json
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cpo_engine.causal.config import CausalConfig
from cpo_engine.causal.ope import OPEConfig
from cpo_engine.data.grid import split_queries
from cpo_engine.causal.evaluation import (METRICS, EvaluationConfig, Grid, build_grid, draw_logs,
                                          logging_policy, policy_metrics, static_ipw,
                                          static_naive, text_features)

FORMAT = "cpo-evaluation/1"
METHOD_LABELS = {
    "causal_dml": "causal DML (per query)",
    "causal_dml_static": "causal DML (best static)",
    "causal_dml_known_policy": "causal DML, known policy E[T|q] (per query)",
    "causal_forest": "causal forest (econml, per query)",
    "outcome_model": "non-causal outcome model f(X,T)",
    "static_naive": "best static, naive logged mean",
    "static_ipw": "best static, IPW",
    "oracle_static": "oracle best static",
    "oracle_per_query": "oracle best per query",
}


def _features(reps: Any, grid: Grid, cfg: EvaluationConfig) -> np.ndarray:
    X = np.asarray(reps.X, dtype=np.float64)
    if not cfg.query_text_features:
        return X
    f = text_features(grid.query_texts)
    return np.hstack([X, (f - f.mean(0)) / np.where(f.std(0) > 0, f.std(0), 1)])


def _fit_causal(causal: CausalConfig, logs: dict, X: np.ndarray, T: np.ndarray, seed: int,
                t_hat: np.ndarray | None = None):
    model = causal.make_model(random_state=seed)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        return model.fit(logs["y"], T[logs["p"]], X=X[logs["q"]], groups=logs["q"], t_hat=t_hat)


def run_seed(grid: Grid, X: np.ndarray, T: np.ndarray, cfg: EvaluationConfig, seed: int,
             causal_cfg: CausalConfig | None = None, ope: OPEConfig | None = None) -> dict:
    """One repetition: split, log, fit every method, score on the test queries (and, with
    ``cfg.ope``, check off-policy estimates of every method's policy value against the truth)."""
    from cpo_engine.causal.baseline import OutcomeRewardModel

    causal_cfg = causal_cfg or CausalConfig()
    rng = np.random.default_rng(seed)
    train, test = split_queries(grid.query_texts, cfg.test_fraction, rng)
    if cfg.train_queries is not None and cfg.train_queries < len(train):
        train = np.sort(rng.choice(train, size=cfg.train_queries, replace=False))
    policy = logging_policy(grid, cfg)
    logs = draw_logs(grid, policy, train, cfg.logged_per_query, rng)
    truth = grid.truth[test]
    n_hard = max(1, int(round(cfg.hard_fraction * len(test))))
    hard = np.zeros(len(test), dtype=bool)
    hard[np.argsort(truth.mean(1), kind="stable")[:n_hard]] = True
    t0 = time.perf_counter()
    causal = _fit_causal(causal_cfg, logs, X, T, seed)
    fit_s = time.perf_counter() - t0
    per_query = causal.effect_grid(X[test], T)
    known = _fit_causal(causal_cfg, logs, X, T, seed, t_hat=(policy @ T)[logs["q"]])
    baseline = OutcomeRewardModel(random_state=seed).fit(logs["y"], T[logs["p"]], X=X[logs["q"]])
    n_p = T.shape[0]
    preds: dict[str, np.ndarray] = {
        "causal_dml": per_query,
        "causal_dml_static": causal.effect_grid(X[train], T).mean(0),
        "causal_dml_known_policy": known.effect_grid(X[test], T),
        "outcome_model": baseline.effect_grid(X[test], T),
        "static_naive": static_naive(logs, n_p),
        "static_ipw": static_ipw(logs, n_p),
        "oracle_static": truth.mean(0),
        "oracle_per_query": truth,
    }
    if cfg.with_forest:
        preds["causal_forest"] = _forest_grid(causal_cfg, logs, X, T, test, seed)
    methods = {name: policy_metrics(np.broadcast_to(p, truth.shape), truth, hard) for name, p in preds.items()}
    out = {"seed": seed, "n_train_queries": int(len(train)), "n_test_queries": int(len(test)),
           "logged_rows": int(len(logs["y"])), "causal_fit_s": round(fit_s, 3),
           "logged_prompt_share": np.bincount(logs["p"], minlength=n_p).tolist(),
           "causal_diagnostics": causal.diagnostics_.to_dict(), "methods": methods}
    if cfg.ope:
        from cpo_engine.causal.ope_validation import validate_seed

        choices = {name: np.broadcast_to(p, truth.shape).argmax(1) for name, p in preds.items()}
        others = {"non_causal": np.clip(baseline.predict(np.repeat(X[test], n_p, 0), np.tile(T, (len(test), 1)))
                                        .reshape(len(test), n_p), logs["y"].min(), logs["y"].max()),
                  "static": np.broadcast_to(_filled(static_naive(logs, n_p), logs["y"].mean()), (len(test), n_p))}
        out["ope"] = validate_seed(grid, X, T, policy, logs, test, causal, choices,
                                   cfg.ope_logged_per_query or cfg.logged_per_query, ope or OPEConfig(), rng, seed,
                                   cfg.ope_draws, others)
    return out


def _filled(v: np.ndarray, fill: float) -> np.ndarray:
    return np.where(np.isfinite(v), v, fill)


def _forest_grid(causal_cfg, logs, X, T, test, seed) -> np.ndarray:
    from cpo_engine.causal.forest import CausalForestRewardModel

    forest = CausalForestRewardModel(model_y=causal_cfg.model_y, model_t=causal_cfg.model_t, cv=causal_cfg.cv,
                                     n_estimators=100, random_state=seed)
    forest.fit(logs["y"], T[logs["p"]], X=X[logs["q"]], groups=logs["q"])
    return forest.effect_grid(X[test], T)


def mean_ci(values: list[float], level: float = 0.95) -> dict[str, float]:
    """Mean and t-interval over seeds (a single seed gives a zero-width interval)."""
    from scipy.stats import t as student_t

    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if len(v) == 0:
        return {"mean": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}
    m = float(v.mean())
    if len(v) < 2:
        return {"mean": m, "ci_low": m, "ci_high": m}
    h = float(student_t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return {"mean": m, "ci_low": m - h, "ci_high": m + h}


def summarize(per_seed: list[dict]) -> dict[str, dict]:
    """Per method and metric: {mean, ci_low, ci_high} over seeds."""
    names = list(per_seed[0]["methods"])
    return {n: {m: mean_ci([s["methods"][n][m] for s in per_seed]) for m in METRICS} for n in names}


def evaluate(table: Any, cfg: EvaluationConfig | None = None, *, causal: CausalConfig | None = None,
             ope: OPEConfig | None = None, representations: Any = None,
             progress: Callable[[str], None] | None = None, checkpoint_dir: Any = None,
             **rep_kwargs: Any) -> dict:
    """Evaluate the causal reward model against baselines on a full outcome grid.

    Parameters
    ----------
    table : pyarrow.Table
        Validated full-grid triplets (every prompt on every query).
    cfg : EvaluationConfig
        Confounding, strength, logs per query, seeds.
    causal : CausalConfig, optional
        The causal model's settings (default: :class:`CausalConfig`'s defaults, those of `cpo run`).
    ope : OPEConfig, optional
        Settings of the off-policy estimators checked when ``cfg.ope`` (clipping, level, propensity model).
    representations : Representations, optional
        Prebuilt X/T for ``table``; built with :func:`cpo_engine.embedding.build_representations`
        (``rep_kwargs`` go to it) when omitted.
    checkpoint_dir : path, optional
        Each finished seed is written here; a rerun with the same settings and data reuses them,
        so an interrupted evaluation resumes where it stopped.
    """
    cfg = cfg or EvaluationConfig()
    cfg.validate()
    causal, ope = causal or CausalConfig(), ope or OPEConfig()
    if representations is None:
        from cpo_engine.embedding import build_representations

        representations = build_representations(table, **rep_kwargs)
    grid = build_grid(table, representations)
    X, T = _features(representations, grid, cfg), np.asarray(representations.T, np.float64)
    per_seed = []
    key = _checkpoint_key(cfg, causal, ope, grid, X, T)
    for s in range(cfg.first_seed, cfg.first_seed + cfg.seeds):
        per_seed.append(_cached_seed(checkpoint_dir, key, s) or _save_seed(
            checkpoint_dir, key, run_seed(grid, X, T, cfg, s, causal, ope)))
        if progress:
            m = per_seed[-1]["methods"]
            progress(f"seed {s}: causal {m['causal_dml']['policy_value']:.4f} "
                     f"outcome {m['outcome_model']['policy_value']:.4f} "
                     f"ipw {m['static_ipw']['policy_value']:.4f}")
    from cpo_engine.causal.ope_validation import summarize_ope

    return {"format": FORMAT, "settings": _settings(cfg, table, representations, grid, X) | {
        "causal": asdict(causal), "ope": asdict(ope)}, "methods": summarize(per_seed),
        "ope": summarize_ope(per_seed), "per_seed": [_without_draws(s) for s in per_seed], "notes": _notes(cfg)}


def _without_draws(seed: dict) -> dict:
    """A seed's result without the OPE check's raw draws (kept in the checkpoints; the summary has them)."""
    if not seed.get("ope"):
        return seed
    return seed | {"ope": {k: v for k, v in seed["ope"].items() if k != "draws"}}


def _checkpoint_key(cfg: EvaluationConfig, causal: CausalConfig, ope: OPEConfig, grid: Grid, X: np.ndarray,
                    T: np.ndarray) -> str:
    import hashlib

    settings = {k: v for k, v in asdict(cfg).items() if k not in ("seeds", "first_seed")} | asdict(causal) | {
        "ope": asdict(ope)}
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for a in (grid.truth, X, T):
        h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
    return h.hexdigest()


def _cached_seed(folder: Any, key: str, seed: int) -> dict | None:
    path = None if folder is None else Path(folder) / f"seed_{seed}.json"
    if path is None or not path.is_file():
        return None
    saved = json.loads(path.read_text())
    return saved["result"] if saved.get("key") == key else None


def _save_seed(folder: Any, key: str, result: dict) -> dict:
    if folder is not None:
        from cpo_engine.utils import atomic_write_json, json_default_str

        Path(folder).mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(folder) / f"seed_{result['seed']}.json",
                          _clean(json.loads(json.dumps({"key": key, "result": result}, default=json_default_str))))
    return result


def _settings(cfg: EvaluationConfig, table: Any, reps: Any, grid: Grid, X: np.ndarray) -> dict:
    from cpo_engine.utils import versions

    tasks = sorted(set(table.column("task").to_pylist())) if "task" in table.column_names else None
    rep = reps.summary() if hasattr(reps, "summary") else {}
    return asdict(cfg) | {"rows": table.num_rows, "tasks": tasks, "n_queries": int(grid.truth.shape[0]),
                          "n_prompts": int(grid.truth.shape[1]), "n_query_features": int(X.shape[1]),
                          "mean_samples_per_cell": float(grid.cell_count.mean()),
                          "representations": rep, "versions": versions()}


def _notes(cfg: EvaluationConfig) -> list[str]:
    return [
        "truth = per-cell mean over the grid's repeated samples; oracle_per_query picks the argmax of "
        "these noisy means, so it is an optimistic upper bound",
        "tau_b is averaged over test queries whose true cell means are not all equal",
        "PCA for X and T is fitted on all query/prompt texts (unsupervised, no outcomes)",
        f"confounding={cfg.confounding}: P(prompt|query) ~ exp(strength * z_query * z_log_prompt_length)"
        + (f", mixed with {cfg.exploration:g} uniform" if cfg.exploration else ""),
    ] + ([
        "ope: held-out logs on test queries drawn with replacement (each draw its own query), the same logging "
        "policy; truth = the policy's mean true success over the test queries (the population the draws come "
        "from); 'estimated' propensities come from a cross-fitted multinomial model on the training logs "
        "(the DML fit's folds)"] if cfg.ope else [])


def _fmt(ci: dict, digits: int = 3) -> str:
    if not np.isfinite(ci["mean"]):
        return "n/a"
    if ci["ci_low"] == ci["ci_high"]:
        return f"{ci['mean']:.{digits}f}"
    return f"{ci['mean']:.{digits}f} [{ci['ci_low']:.{digits}f}, {ci['ci_high']:.{digits}f}]"


def table_markdown(result: dict) -> str:
    """The result as a Markdown table (mean [95% CI] over seeds)."""
    s = result["settings"]
    strength = "" if s["confounding"] == "none" else f" strength={s['strength']}"
    head = (f"confounding={s['confounding']}{strength} "
            f"logged_per_query={s['logged_per_query']} seeds={s['seeds']} "
            f"test queries={result['per_seed'][0]['n_test_queries']} prompts={s['n_prompts']}\n\n")
    rows = ["| method | policy value | regret | tau-b | hard: policy value | hard: tau-b |",
            "|---|---|---|---|---|---|"]
    for name, m in result["methods"].items():
        rows.append(f"| {METHOD_LABELS.get(name, name)} | {_fmt(m['policy_value'])} | {_fmt(m['regret'])} | "
                    f"{_fmt(m['tau_b'])} | {_fmt(m['policy_value_hard'])} | {_fmt(m['tau_b_hard'])} |")
    return head + "\n".join(rows) + "\n"


def plot_png(result: dict) -> bytes:
    """Policy value and tau-b per method with 95% CIs, as PNG bytes (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["methods"])
    labels = [METHOD_LABELS.get(n, n) for n in names]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.5 * len(names) + 1.5), sharey=True)
    for ax, metric in zip(axes, ("policy_value", "tau_b")):
        ci = [result["methods"][n][metric] for n in names]
        mean = np.array([c["mean"] for c in ci])
        err = np.abs(np.array([[c["mean"] - c["ci_low"] for c in ci], [c["ci_high"] - c["mean"] for c in ci]]))
        ax.barh(range(len(names)), np.nan_to_num(mean), xerr=np.nan_to_num(err), color="#4c78a8")
        ax.set_title(metric.replace("_", " "))
        if metric == "policy_value":
            lo = np.nanmin(np.array([c["ci_low"] for c in ci]))
            ax.set_xlim(max(0.0, lo - 0.02), None)
    axes[0].set_yticks(range(len(names)), labels)
    axes[0].invert_yaxis()
    s = result["settings"]
    strength = "" if s["confounding"] == "none" else f" strength={s['strength']}"
    fig.suptitle(f"confounding={s['confounding']}{strength} K={s['logged_per_query']} "
                 f"seeds={s['seeds']}")
    return figure_png(fig)


def figure_png(fig: Any, dpi: int = 110) -> bytes:
    """A matplotlib figure as PNG bytes (laid out, then closed)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def write_evaluation(result: dict, out: Any) -> dict[str, Path]:
    """Write evaluation.json, evaluation.md and evaluation.png into ``out`` (atomically)."""
    from cpo_engine.causal.ope_validation import ope_markdown
    from cpo_engine.utils import atomic_write_bytes, atomic_write_json, atomic_write_text, json_default_str

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "evaluation.json", "table": out / "evaluation.md", "plot": out / "evaluation.png"}
    atomic_write_json(paths["json"], _clean(json.loads(json.dumps(result, default=json_default_str))))
    atomic_write_text(paths["table"], table_markdown(result) + ope_markdown(result.get("ope", {})))
    atomic_write_bytes(paths["plot"], plot_png(result))
    return paths



def _clean(o: Any) -> Any:
    """Replace NaN/inf (not valid JSON) by None, recursively."""
    if isinstance(o, float):
        return o if np.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_clean(v) for v in o]
    return o
