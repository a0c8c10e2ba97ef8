"""Cross-fitting folds as Ray tasks.

Each fold runs :func:`cpo_engine.causal._crossfit._fit_fold` (the function the serial path calls)
as one Ray task; the shared arrays go to the object store once. ``ray.init()`` is called only when
no Ray runtime is attached yet (then it attaches to ``RAY_ADDRESS`` or starts a local one).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def run_folds_ray(data: dict[str, Any], folds: list[tuple[np.ndarray, np.ndarray]], model_y: Any,
                  model_t: Any, seed: int, device: str, num_cpus: float = 1.0,
                  num_gpus: float | None = None) -> list:
    """Fit every fold as a Ray task; returns FoldResults in fold order.

    Parameters
    ----------
    num_cpus : float
        CPUs reserved per fold task.
    num_gpus : float, optional
        GPUs per fold task; None reserves a quarter GPU per task when ``device`` is CUDA.
    """
    import ray

    from cpo_engine.causal._crossfit import _fit_fold
    if not ray.is_initialized():
        ray.init()
    if num_gpus is None:
        num_gpus = 0.25 if str(device).startswith("cuda") else 0.0
    remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(_fit_fold)
    data_ref = ray.put(data)
    refs = [remote.remote(data_ref, tr, te, model_y, model_t, seed, device) for tr, te in folds]
    return ray.get(refs)
