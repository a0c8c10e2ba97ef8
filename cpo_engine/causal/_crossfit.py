"""Cross-fitting shared by the serial and Ray paths: one fold worker, one driver.

``_fit_fold`` fits both nuisances on a fold's training rows and predicts its held-out rows. The
serial loop and :func:`cpo_engine.distributed.crossfit.run_folds_ray` call exactly this function,
so their results are identical.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cpo_engine.causal.nuisance import fit_nuisance, make_nuisance


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

    ``data`` holds ``X``, ``Y``, ``T`` and optional ``groups``/``w`` arrays (shared, read-only);
    ``model_y``/``model_t`` are names or unfitted estimators, built fresh here.
    """
    X, Y, T = data["X"], data["Y"], data["T"]
    groups, w = data.get("groups"), data.get("w")
    g_tr = None if groups is None else groups[train]
    w_tr = None if w is None else w[train]
    my = fit_nuisance(make_nuisance(model_y, seed, device), X[train], Y[train], g_tr, w_tr)
    mt = fit_nuisance(make_nuisance(model_t, seed, device), X[train], T[train], g_tr, w_tr)
    t_pred = np.asarray(mt.predict(X[test]), dtype=np.float64).reshape(len(test), -1)
    y_pred = np.asarray(my.predict(X[test]), dtype=np.float64).reshape(len(test))
    return FoldResult(test=test, y_pred=y_pred, t_pred=t_pred, model_y=my, model_t=mt)


def run_folds(data: dict[str, Any], folds: list, model_y: Any, model_t: Any, seed: int,
              device: str, backend: str = "serial", ray_options: dict | None = None) -> list[FoldResult]:
    """Run every fold through :func:`_fit_fold`, in this process or as Ray tasks."""
    if backend == "serial":
        return [_fit_fold(data, tr, te, model_y, model_t, seed, device) for tr, te in folds]
    if backend == "ray":
        from cpo_engine.distributed.crossfit import run_folds_ray

        return run_folds_ray(data, folds, model_y, model_t, seed, device, **(ray_options or {}))
    raise ValueError(f"backend must be 'serial' or 'ray', got {backend!r}")


def assemble(results: list[FoldResult], n: int, d_t: int) -> tuple[np.ndarray, np.ndarray]:
    """Stitch per-fold predictions back into row order: (y_pred (n,), t_pred (n, d_T))."""
    y_pred, t_pred = np.empty(n), np.empty((n, d_t))
    for r in results:
        y_pred[r.test] = r.y_pred
        t_pred[r.test] = r.t_pred
    return y_pred, t_pred
