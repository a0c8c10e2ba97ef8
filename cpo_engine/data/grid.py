"""The (query, prompt) grid of a triplet table: cell means and the query split every workflow shares."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cpo_engine.exceptions import DataError


def cell_means(row_q: np.ndarray, row_p: np.ndarray, y: np.ndarray, n_q: int, n_p: int,
               weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(n_q, n_p) mean score per (query, prompt) cell, NaN where no row was logged, and the row count
    per cell. ``weights`` gives a weighted mean (the count stays a row count)."""
    cell = np.asarray(row_q, dtype=np.int64) * n_p + np.asarray(row_p, dtype=np.int64)
    w = np.ones(len(cell)) if weights is None else np.asarray(weights, dtype=np.float64)
    count = np.bincount(cell, minlength=n_q * n_p)
    wsum = np.bincount(cell, weights=w, minlength=n_q * n_p)
    total = np.bincount(cell, weights=w * np.asarray(y, dtype=np.float64), minlength=n_q * n_p)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(wsum > 0, total / np.where(wsum > 0, wsum, 1), np.nan)
    return means.reshape(n_q, n_p), count.reshape(n_q, n_p)


def nan_mean(a: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    """``np.nanmean`` without its ``RuntimeWarning: Mean of empty slice``: NaN where a slice holds no value
    (a prompt never logged on the held-out queries, a query with no recorded outcome), silently, so callers
    decide what an empty slice means. (``np.errstate`` does not silence that warning: numpy raises it with
    ``warnings.warn``.)"""
    a = np.asarray(a, dtype=np.float64)
    ok = ~np.isnan(a)
    n = ok.sum(axis=axis)
    total = np.where(ok, a, 0.0).sum(axis=axis)
    out = np.where(n > 0, total / np.maximum(n, 1), np.nan)
    return float(out) if out.ndim == 0 else out


def split_queries(query_texts: Sequence[str], test_fraction: float,
                  rng: np.random.Generator | int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) query indices; queries with the same text never straddle the split (the same
    question logged under two ids or two tasks would otherwise leak into the test set)."""
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    _, key = np.unique(np.asarray(query_texts, dtype=object).astype(str), return_inverse=True)
    n_keys = int(key.max()) + 1 if len(key) else 0
    test_keys = rng.permutation(n_keys)[: max(1, int(round(test_fraction * n_keys)))]
    is_test = np.isin(key, test_keys)
    if is_test.all() or not is_test.any():
        raise DataError(f"cannot split {len(query_texts)} queries ({n_keys} distinct texts) into train and test",
                        fix="use more queries or change the test fraction (holdout.test_fraction)")
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


__all__ = ["cell_means", "nan_mean", "split_queries"]
