"""Input validation and fold construction shared by the causal estimators.

Every error says what is wrong, where (array, column, first rows) and how to fix it.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from cpo_engine.exceptions import ConfigError, DataError

Folds = list[tuple[np.ndarray, np.ndarray]]


def _rows(mask: np.ndarray, k: int = 5) -> str:
    idx = np.flatnonzero(mask)
    more = f" (+{len(idx) - k} more)" if len(idx) > k else ""
    return f"{idx[:k].tolist()}{more}"


def as_float_array(a: Any, name: str, ndim: tuple[int, ...]) -> np.ndarray:
    """Float64 array with allowed dimensionality and only finite values."""
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name} must be numeric: {exc}") from exc
    if arr.ndim not in ndim:
        raise DataError(f"{name} must have {' or '.join(map(str, ndim))} dimension(s), got shape {arr.shape}")
    if np.isfinite(arr.sum()):  # fast path; an overflowing sum falls through to the row check
        return arr
    bad = ~np.isfinite(arr) if arr.ndim == 1 else ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise DataError(
            f"{name} has NaN or infinite values in rows {_rows(bad)}: drop or impute those rows "
            "before fitting"
        )
    return arr


def check_fit_inputs(Y, T, X, groups=None, sample_weight=None) -> tuple:
    """Validate and coerce ``fit`` inputs; returns (Y (n,), T (n, d_T), X (n, d_X), groups, w)."""
    if X is None:
        raise DataError("X (query features) is required: pass X=representations.X[row_query]")
    Y = as_float_array(Y, "Y", (1, 2))
    if Y.ndim == 2:
        if Y.shape[1] != 1:
            raise DataError(f"Y must be one outcome per row, got shape {Y.shape}")
        Y = Y[:, 0]
    T = as_float_array(T, "T", (1, 2))
    T = T[:, None] if T.ndim == 1 else T
    X = as_float_array(X, "X", (2,))
    n = len(Y)
    for name, arr in (("T", T), ("X", X)):
        if len(arr) != n:
            raise DataError(f"Y has {n} rows but {name} has {len(arr)}: pass one row per observation")
    groups = _check_groups(groups, n)
    w = _check_weights(sample_weight, n)
    _check_variation(Y, T)
    return Y, T, X, groups, w


def _check_groups(groups, n: int):
    if groups is None:
        return None
    groups = np.asarray(groups)
    if groups.ndim != 1 or len(groups) != n:
        raise DataError(f"groups must be 1-D with {n} entries (one query id per row), got shape {groups.shape}")
    if groups.dtype.kind == "f" and np.isnan(groups).any():
        raise DataError(f"groups has NaN in rows {_rows(np.isnan(groups))}: every row needs a query id")
    if groups.dtype == object and any(g is None for g in groups):
        raise DataError("groups has None entries: every row needs a query id")
    return groups


def _check_weights(sample_weight, n: int) -> np.ndarray:
    if sample_weight is None:
        return np.ones(n)
    w = as_float_array(sample_weight, "sample_weight", (1,))
    if len(w) != n:
        raise DataError(f"Y has {n} rows but sample_weight has {len(w)}")
    if (w < 0).any() or w.sum() <= 0:
        raise DataError(f"sample_weight must be >= 0 with a positive sum; negative in rows {_rows(w < 0)}")
    return w


def _check_variation(Y: np.ndarray, T: np.ndarray) -> None:
    if np.ptp(Y) == 0:
        raise DataError(
            f"Y is constant (every score is {Y[0]:g}): there is no variation for prompts to explain; "
            "check the grader or log more queries"
        )
    flat = np.flatnonzero(np.abs(T - T[0]).sum(0) == 0)
    if len(flat):
        raise DataError(
            f"T columns {flat.tolist()} are constant across all rows: the effect of a prompt feature "
            "that never varies is not identified; log more than one prompt or drop those columns "
            "(e.g. use fewer prompt PCA components)"
        )


def group_codes(groups: np.ndarray | None, n: int) -> np.ndarray:
    """Dense codes 0..G-1 of ``groups`` in sorted order (each row its own group when None).

    Non-negative integer ids take an O(n) path (no sort), others ``np.unique``.
    """
    if groups is None:
        return np.arange(n, dtype=np.int64)
    g = np.asarray(groups)
    if g.dtype.kind in "iu" and len(g) and g.min() >= 0 and g.max() < 4 * len(g) + 1024:
        present = np.bincount(g) > 0
        return (np.cumsum(present) - 1)[g].astype(np.int64)
    return np.unique(g, return_inverse=True)[1].astype(np.int64).reshape(-1)


def make_folds(cv: Any, n: int, groups: np.ndarray | None, random_state: int,
               min_groups_per_fold: int = 2) -> Folds:
    """Cross-fitting folds from an int, a splitter with ``split`` or explicit (train, test) pairs.

    With an int, whole groups (queries) are assigned to folds at random; explicit folds are checked
    for overlap, coverage and split groups.
    """
    codes = group_codes(groups, n)
    if isinstance(cv, (int, np.integer)) and not isinstance(cv, bool):
        folds = _int_folds(int(cv), codes, random_state, min_groups_per_fold)
    elif hasattr(cv, "split"):
        folds = [(np.asarray(a), np.asarray(b)) for a, b in cv.split(np.zeros((n, 1)), groups=groups)]
    elif isinstance(cv, Iterable):
        folds = [(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)) for a, b in cv]
    else:
        raise ConfigError(f"cv must be an int >= 2, a splitter or (train, test) pairs, got {cv!r}")
    _check_folds(folds, n, codes, min_groups_per_fold)
    return folds


def _int_folds(cv: int, codes: np.ndarray, random_state: int, min_per_fold: int) -> Folds:
    n_groups = int(codes.max()) + 1 if len(codes) else 0
    if cv < 2:
        raise ConfigError(f"cv must be an int >= 2, got {cv}")
    if n_groups < cv * min_per_fold:
        raise DataError(
            f"only {n_groups} distinct queries for cv={cv} folds; cross-fitting needs at least "
            f"{min_per_fold} queries per fold ({cv * min_per_fold} in all): log more queries or lower cv"
        )
    rng = np.random.default_rng(random_state)
    fold_of_group = rng.permutation(n_groups) % cv
    fold = fold_of_group[codes]
    idx = np.arange(len(codes))
    return [(idx[fold != k], idx[fold == k]) for k in range(cv)]


def _check_folds(folds: Folds, n: int, codes: np.ndarray, min_per_fold: int) -> None:
    if len(folds) < 2:
        raise ConfigError(f"cross-fitting needs at least 2 folds, got {len(folds)}")
    seen = np.zeros(n, dtype=np.int64)
    for k, (train, test) in enumerate(folds):
        if len(test) == 0 or len(train) == 0:
            raise ConfigError(f"fold {k} has an empty train or test set")
        if min(train.min(), test.min()) < 0 or max(train.max(), test.max()) >= n:
            raise ConfigError(f"fold {k} has indices outside [0, {n})")
        seen[test] += 1
        in_test = np.zeros(int(codes.max()) + 1, dtype=bool)
        in_test[codes[test]] = True
        shared = np.unique(codes[train][in_test[codes[train]]])
        if len(shared):
            raise ConfigError(
                f"fold {k} puts {len(shared)} queries in both train and test (rows of one query are "
                "not independent): build folds by query, e.g. sklearn GroupKFold with groups"
            )
        n_test_groups = int(in_test.sum())
        if n_test_groups < min_per_fold:
            raise DataError(
                f"fold {k} holds out only {n_test_groups} queries (need >= {min_per_fold}): "
                "log more queries or lower cv"
            )
    if (seen != 1).any():
        raise ConfigError(
            f"test folds must cover every row exactly once; rows {_rows(seen != 1)} are held out "
            f"{sorted(set(seen[seen != 1].tolist()))} times"
        )
