"""Cross-fitting folds as Ray tasks.

The fold worker is an argument: the causal room passes its ``_fit_fold`` (the function its serial
path calls, so both give identical results), and this room imports nothing from ``causal``. The
shared arrays go to the object store once.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from cpo_engine.distributed import ensure_ray


def run_folds_ray(fold_fn: Callable[..., Any], data: dict[str, Any],
                  folds: Sequence[tuple[np.ndarray, np.ndarray]], *args: Any, num_cpus: float = 1.0,
                  num_gpus: float | None = 0.0) -> list:
    """Run ``fold_fn(data, train, test, *args)`` for every fold as a Ray task; results in fold order.

    Parameters
    ----------
    fold_fn : callable
        The single-fold worker, e.g. :func:`cpo_engine.causal._crossfit._fit_fold`; it must be
        importable by the workers (a module-level function).
    data : dict of str to ndarray
        Arrays every fold reads (put in the object store once, read-only in the tasks).
    folds : sequence of (train, test) index arrays
        The cross-fitting folds.
    *args
        Passed to ``fold_fn`` after the fold's rows (nuisance specs, seed, device, ...).
    num_cpus : float
        CPUs reserved per fold task.
    num_gpus : float, optional
        GPUs reserved per fold task (None: none).
    """
    ray = ensure_ray()
    remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus or 0.0)(fold_fn)
    data_ref = ray.put(data)
    refs = [remote.remote(data_ref, tr, te, *args) for tr, te in folds]
    return ray.get(refs)


__all__ = ["run_folds_ray"]
