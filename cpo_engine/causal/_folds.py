"""Seeded fold assignment shared by cross-fitting, the nuisances' inner CV and the edit analysis.

A group's fold is a hash of its id alone (not of its position), so a query lands in the same fold
whichever subset of rows is being fitted: the sufficient-statistics cross-fit relies on this.
"""

from __future__ import annotations

import numpy as np


def fold_ids(n: int, n_folds: int, groups: np.ndarray | None, seed: int) -> np.ndarray:
    """Assign rows to ``n_folds`` folds; all rows of a group share a fold when groups are given.

    Parameters
    ----------
    n : int
        Number of rows.
    n_folds : int
        Number of folds.
    groups : ndarray (n,), optional
        Group (query) id of each row. Integer ids are hashed as they are; other ids are coded first.
    seed : int
        Seed of the permutation (no groups) or of the hash (groups).

    Returns
    -------
    ndarray (n,) of int64
        Fold of each row, in ``[0, n_folds)``.
    """
    if groups is None:
        return np.random.default_rng(seed).permutation(n) % n_folds
    g = np.asarray(groups)
    if g.dtype.kind not in "iu":
        from cpo_engine.causal._checks import group_codes

        g = group_codes(g, n)
    return (splitmix64(g.astype(np.uint64), seed) % np.uint64(n_folds)).astype(np.int64)


def splitmix64(x: np.ndarray, seed: int) -> np.ndarray:
    """SplitMix64 finalizer of ``x + (seed + 1) * golden``: a well-mixed, seeded uint64 hash."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(seed + 1) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def folds_from_ids(ids: np.ndarray, n_folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(train, test)`` row-index pairs of fold ids, skipping folds that hold no rows."""
    out = []
    for f in range(n_folds):
        test = np.flatnonzero(ids == f)
        if len(test):
            out.append((np.flatnonzero(ids != f), test))
    return out


__all__ = ["fold_ids", "folds_from_ids", "splitmix64"]
