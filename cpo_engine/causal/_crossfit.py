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
    y_pred: np.ndarray | None
    t_pred: np.ndarray | None
    model_y: Any
    model_t: Any
    queries: np.ndarray | None = None
    """Query codes of the test rows, when the fold predicted per query (then ``y_pred``/``t_pred`` are
    None and ``query_pred`` (len(queries), 1 + d_T) holds the predictions)."""
    query_pred: np.ndarray | None = None


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


def assemble(results: list[FoldResult], n: int, d_t: int,
             codes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stitch per-fold predictions back into row order: (y_pred (n,), t_pred (n, d_T)).

    Folds that predicted per query need the rows' query ``codes``.
    """
    y_pred, t_pred = np.empty(n), np.empty((n, d_t))
    for r in results:
        if r.queries is not None:
            pred = np.empty((int(r.queries.max()) + 1, 1 + d_t))
            pred[r.queries] = r.query_pred
            rows = pred[codes[r.test]]
            y_pred[r.test], t_pred[r.test] = rows[:, 0], rows[:, 1:]
        else:
            y_pred[r.test] = r.y_pred
            t_pred[r.test] = r.t_pred
    return y_pred, t_pred


def query_predictions(results: list[FoldResult], y_pred: np.ndarray | None, t_pred: np.ndarray | None, first: np.ndarray,
                      codes: np.ndarray) -> np.ndarray | None:
    """Per-query predictions (G, 1 + d_T): from the folds when they predicted per query, else from the
    rows when they are constant within every query (nuisances of X alone); None otherwise (e.g. a
    per-row known ``t_hat``)."""
    if all(r.queries is not None for r in results):
        pg = np.empty((len(first), results[0].query_pred.shape[1]))
        for r in results:
            pg[r.queries] = r.query_pred
        return pg
    pred = np.column_stack([y_pred, t_pred])
    pg = pred[first]
    scale = max(1.0, float(np.abs(pg).max(initial=0.0)))
    return pg if np.abs(pred - pg[codes]).max(initial=0.0) <= 1e-12 * scale else None


def can_use_stats(data: dict[str, Any], folds: list, model_y: Any, model_t: Any) -> bool:
    """The stats path applies: joint ridge nuisances, query groups, folds that partition the rows."""
    n = len(data["Y"])
    return (_joint_ridge(model_y, model_t) and data.get("groups") is not None
            and all(len(tr) + len(te) == n for tr, te in folds))


def ridge_crossfit(data: dict[str, Any], folds: list, model: Any, seed: int, device: str) -> list[FoldResult]:
    """Cross-fit a TorchRidge on ``[Y, T]`` for every fold from one pass of per-cell statistics.

    Rows fall into cells (outer fold, inner CV fold); the inner fold of a row is a hash of its query
    (:func:`~cpo_engine.causal._folds.fold_ids`), as in the per-fold path, so each fold's
    training statistics and CV statistics are sums of cells. When ``X`` is the same on every row of a
    query (``data["cluster_first"]``: each query's first row), the statistics are built from per-query
    sums (one row per query, weighted by its rows' total weight), which gives the same Gram matrices.
    """

    template = make_nuisance(model, seed, device)
    X, groups, w = data["X"], data["groups"], data.get("w")
    n, n_out, n_in = len(X), len(folds), template.cv
    w = np.ones(n) if w is None else w
    outer = np.empty(n, dtype=np.int64)
    for k, (_, te) in enumerate(folds):
        outer[te] = k
    from cpo_engine.causal.nuisances._common import resolve_torch_device

    dev = resolve_torch_device(template.device)
    shift = X.mean(0) if template.fit_intercept else np.zeros(X.shape[1])
    first = data.get("cluster_first")
    if first is not None:  # one row per query
        units = (X[first], *_query_units(data, w))
        cell = outer[first] * n_in + fold_ids(len(first), n_in, np.arange(len(first)), template.random_state)
    else:
        units = (X, np.column_stack([data["Y"], data["T"]]), w, None)
        cell = outer * n_in + fold_ids(n, n_in, groups, template.random_state)
    stats = _cell_stats(units, cell, n_out * n_in, shift, dev)
    models = [_stats_fold(stats, k, n_out, n_in, template, shift) for k in range(n_out)]
    if first is None:
        return [_fold_result(m, X[te], te) for m, (_, te) in zip(models, folds)]
    q_fold = outer[first]
    return [_fold_result(m, X[first], te, np.flatnonzero(q_fold == k)) for k, (m, (_, te)) in
            enumerate(zip(models, folds))]


def _query_units(data: dict[str, Any], w: np.ndarray) -> tuple:
    """Per query (mean target, total weight, sum of w * target^2): the ridge statistics of a query's
    rows equal those of its one aggregated row, except ``syy``, which is only an offset of the CV
    loss (any per-query sum of squares chooses the same penalty)."""
    if data.get("query_sums") is not None:
        sw, sums, sq = data["query_sums"]
    else:
        codes, G = data["groups"], len(data["cluster_first"])
        both = np.column_stack([data["Y"], data["T"]])
        sw = np.bincount(codes, weights=w, minlength=G)
        sums = np.stack([np.bincount(codes, weights=w * both[:, j], minlength=G) for j in range(both.shape[1])], 1)
        sq = np.stack([np.bincount(codes, weights=w * both[:, j] ** 2, minlength=G) for j in range(both.shape[1])], 1)
    mean = np.divide(sums, sw[:, None], out=np.zeros_like(sums), where=sw[:, None] > 0)
    return mean, sw, sq


def _cell_stats(units: tuple, cell: np.ndarray, n_cells: int, shift: np.ndarray, dev: Any) -> list[dict]:
    import torch

    from cpo_engine.causal.nuisances.ridge import suff_stats

    X, Y, w, sq = units
    order = np.argsort(cell, kind="stable")
    bounds = np.searchsorted(cell[order], np.arange(n_cells + 1))
    stats = []
    for c in range(n_cells):
        rows = order[bounds[c]:bounds[c + 1]]
        st = suff_stats(torch.as_tensor(X[rows] - shift, device=dev), torch.as_tensor(Y[rows], device=dev),
                        torch.as_tensor(w[rows], device=dev))
        if sq is not None:
            st["syy"] = torch.as_tensor(sq[rows].sum(0), device=dev)
        stats.append(st)
    return stats


def _fold_result(m: Any, Xp: np.ndarray, test: np.ndarray, queries: np.ndarray | None = None) -> FoldResult:
    """Predictions of a fold's ridge: on its test rows, or per query (``queries``: rows of ``Xp``, which
    then holds one row per query)."""
    parts = {"model_y": m.columns(slice(0, 1), True), "model_t": m.columns(slice(1, None), False)}
    if queries is not None:
        return FoldResult(test=test, y_pred=None, t_pred=None, queries=queries,
                          query_pred=Xp[queries] @ m.coef_ + m.intercept_, **parts)
    pred = Xp @ m.coef_ + m.intercept_
    return FoldResult(test=test, y_pred=pred[:, 0], t_pred=pred[:, 1:], **parts)


def _stats_fold(stats, k, n_out, n_in, template, shift) -> Any:
    from sklearn.base import clone

    def add(parts):
        return {key: sum(p[key] for p in parts) for key in parts[0]}

    held = [add([stats[o * n_in + i] for o in range(n_out) if o != k]) for i in range(n_in)]
    return clone(template).fit_stats(add(held), held if template.alpha is None else None, shift)
