"""Cross-fitting shared by the serial and Ray paths: one fold worker, one driver.

``_fit_fold`` fits both nuisances on a fold's training rows and predicts its held-out rows. The
serial loop and :func:`cpo_engine.distributed.crossfit.run_folds_ray` (handed this function: the
distributed room does not import this one) call exactly this function, so their results are
identical. The edit analysis (:mod:`cpo_engine.edits.estimate`) cross-fits through :func:`run_folds`
too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cpo_engine.causal._folds import fold_ids
from cpo_engine.causal.nuisances import fit_nuisance, make_nuisance


@dataclass
class FoldResult:
    """Out-of-fold predictions of one fold and the nuisance models fitted on its training rows."""

    test: np.ndarray
    y_pred: np.ndarray
    t_pred: np.ndarray
    model_y: Any
    model_t: Any


def _fit_fold(data: dict[str, Any], train: np.ndarray, test: np.ndarray, model_y: Any,
              model_t: Any, seed: int, device: str) -> FoldResult:
    """Fit ``E[Y|X]`` and ``E[T|X]`` on ``train`` rows and predict the ``test`` rows.

    ``data`` holds ``X``, ``Y``, ``T`` and optional ``groups``/``w``/``t_hat`` arrays (shared,
    read-only); ``model_y``/``model_t`` are names or unfitted estimators, built fresh here.
    ``model_t=None`` uses the known ``data["t_hat"]`` (E[T | query] under the logging policy).
    """
    X, Y, T = data["X"], data["Y"], data["T"]
    groups, w = data.get("groups"), data.get("w")
    g_tr = None if groups is None else groups[train]
    w_tr = None if w is None else w[train]
    if model_t is None:
        my = fit_nuisance(make_nuisance(model_y, seed, device), X[train], Y[train], g_tr, w_tr)
        y_pred = np.asarray(my.predict(X[test]), dtype=np.float64).reshape(len(test))
        return FoldResult(test=test, y_pred=y_pred, t_pred=data["t_hat"][test], model_y=my, model_t=None)
    if _joint_ridge(model_y, model_t):  # one Gram matrix for both; per-column penalties as apart
        both = np.column_stack([Y, T])
        m = fit_nuisance(make_nuisance(model_y, seed, device), X[train], both[train], g_tr, w_tr)
        my, mt = m.columns(slice(0, 1), True), m.columns(slice(1, None), False)
    else:
        my = fit_nuisance(make_nuisance(model_y, seed, device), X[train], Y[train], g_tr, w_tr)
        mt = fit_nuisance(make_nuisance(model_t, seed, device), X[train], T[train], g_tr, w_tr)
    t_pred = np.asarray(mt.predict(X[test]), dtype=np.float64).reshape(len(test), -1)
    y_pred = np.asarray(my.predict(X[test]), dtype=np.float64).reshape(len(test))
    return FoldResult(test=test, y_pred=y_pred, t_pred=t_pred, model_y=my, model_t=mt)


def _joint_ridge(model_y: Any, model_t: Any) -> bool:
    """Both nuisances are the same TorchRidge spec, so one multi-output fit serves both."""
    from cpo_engine.causal.nuisances.ridge import TorchRidge

    if isinstance(model_y, str) and isinstance(model_t, str):
        return model_y == model_t == "ridge"
    if isinstance(model_y, TorchRidge) and isinstance(model_t, TorchRidge):
        return model_y.get_params() == model_t.get_params()
    return False


def run_folds(data: dict[str, Any], folds: list, model_y: Any, model_t: Any, seed: int,
              device: str, backend: str = "serial", ray_options: dict | None = None) -> list[FoldResult]:
    """Run every fold through :func:`_fit_fold`, in this process or as Ray tasks.

    ``backend="stats"`` (chosen by the estimator for ridge nuisances) computes every fold from one
    pass of sufficient statistics instead; it equals the fold path up to float rounding.
    """
    if backend == "stats":
        return ridge_crossfit(data, folds, model_y, seed, device)
    if backend == "serial":
        return [_fit_fold(data, tr, te, model_y, model_t, seed, device) for tr, te in folds]
    if backend == "ray":
        from cpo_engine.distributed.crossfit import run_folds_ray

        # a quarter GPU per fold task when the nuisances run on CUDA, unless the caller says otherwise
        opts = {"num_gpus": 0.25 if str(device).startswith("cuda") else 0.0} | (ray_options or {})
        return run_folds_ray(_fit_fold, data, folds, model_y, model_t, seed, device, **opts)
    from cpo_engine.exceptions import ConfigError

    raise ConfigError(f"backend must be 'serial' or 'ray', got {backend!r}")


def assemble(results: list[FoldResult], n: int, d_t: int) -> tuple[np.ndarray, np.ndarray]:
    """Stitch per-fold predictions back into row order: (y_pred (n,), t_pred (n, d_T))."""
    y_pred, t_pred = np.empty(n), np.empty((n, d_t))
    for r in results:
        y_pred[r.test] = r.y_pred
        t_pred[r.test] = r.t_pred
    return y_pred, t_pred


def can_use_stats(data: dict[str, Any], folds: list, model_y: Any, model_t: Any) -> bool:
    """The stats path applies: joint ridge nuisances, query groups, folds that partition the rows."""
    n = len(data["Y"])
    return (_joint_ridge(model_y, model_t) and data.get("groups") is not None
            and all(len(tr) + len(te) == n for tr, te in folds))


def ridge_crossfit(data: dict[str, Any], folds: list, model: Any, seed: int, device: str) -> list[FoldResult]:
    """Cross-fit a TorchRidge on ``[Y, T]`` for every fold from one pass of per-cell statistics.

    Rows fall into cells (outer fold, inner CV fold); the inner fold of a row is a hash of its query
    (:func:`~cpo_engine.causal._folds.fold_ids`), as in the per-fold path, so each fold's
    training statistics and CV statistics are sums of cells.
    """
    import torch

    template = make_nuisance(model, seed, device)
    X, groups, w = data["X"], data["groups"], data.get("w")
    both = np.column_stack([data["Y"], data["T"]])
    n, n_out, n_in = len(X), len(folds), template.cv
    outer = np.empty(n, dtype=np.int64)
    for k, (_, te) in enumerate(folds):
        outer[te] = k
    from cpo_engine.causal.nuisances._common import resolve_torch_device
    from cpo_engine.causal.nuisances.ridge import suff_stats

    cell = outer * n_in + fold_ids(n, n_in, groups, template.random_state)
    dev = resolve_torch_device(template.device)
    shift = X.mean(0) if template.fit_intercept else np.zeros(X.shape[1])
    order = np.argsort(cell, kind="stable")
    bounds = np.searchsorted(cell[order], np.arange(n_out * n_in + 1))
    stats = []
    for c in range(n_out * n_in):
        rows = order[bounds[c]:bounds[c + 1]]
        wt = torch.ones(len(rows), dtype=torch.float64, device=dev) if w is None else torch.as_tensor(w[rows], device=dev)
        stats.append(suff_stats(torch.as_tensor(X[rows] - shift, device=dev),
                                 torch.as_tensor(both[rows], device=dev), wt))
    return [_stats_fold(stats, k, n_out, n_in, template, shift, folds[k][1], X) for k in range(n_out)]


def _stats_fold(stats, k, n_out, n_in, template, shift, test, X) -> FoldResult:
    from sklearn.base import clone

    def add(parts):
        return {key: sum(p[key] for p in parts) for key in parts[0]}

    held = [add([stats[o * n_in + i] for o in range(n_out) if o != k]) for i in range(n_in)]
    m = clone(template).fit_stats(add(held), held if template.alpha is None else None, shift)
    pred = X[test] @ m.coef_ + m.intercept_
    return FoldResult(test=test, y_pred=pred[:, 0], t_pred=pred[:, 1:],
                      model_y=m.columns(slice(0, 1), True), model_t=m.columns(slice(1, None), False))
