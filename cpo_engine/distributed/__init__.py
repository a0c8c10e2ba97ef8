"""Ray glue: cross-fitting folds as tasks (crossfit.py) and :func:`ensure_ray` (attach or start Ray).

Nothing here imports ray at module level: ray is an optional extra (`cpo-engine[ray]`). This room
sits below ``causal`` and ``generation``: they hand it their worker functions, it imports neither.
"""

from __future__ import annotations

import os
from typing import Any


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> Any:
    """The ``ray`` module, attached to a running cluster or a local Ray started here.

    Parameters
    ----------
    address : str, optional
        Cluster to attach to. Without it, ``RAY_ADDRESS`` in the environment (inside a Ray job)
        is attached to; otherwise a local Ray starts with ``num_cpus`` logical CPUs, no dashboard.
    num_cpus : int, optional
        Logical CPUs of a local Ray (None: all of the machine's).

    Returns
    -------
    module
        ``ray``, initialized. An already initialized runtime is kept as it is.
    """
    from cpo_engine.utils import require

    ray = require("ray")
    if ray.is_initialized():
        return ray
    if address:
        ray.init(address=address, log_to_driver=False)
    elif os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    return ray


__all__ = ["ensure_ray"]
