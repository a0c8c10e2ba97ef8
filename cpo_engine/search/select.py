"""The per-query selection rule, defined once.

For each query, among scored candidate prompts: the candidate with the best lower confidence bound
``effect - z * se + bias`` (``bias``: the trust region's exclusion/penalty and the length penalty). A query
keeps the incumbent unless some candidate's bound is strictly above the incumbent's; with effects measured
from the incumbent (``selection.reference = 'incumbent'``, the default) the incumbent's bound is 0, so a
query leaves it only when the bound of a candidate's gain is positive. Ties between other candidates go to
the first; a NaN bound never wins. ``z = 0`` is the point-estimate rule.

``z`` here is the multiplier itself: :func:`cpo_engine.search.scoring.selection_multiplier` turns
``selection.z`` (default in :class:`~cpo_engine.search.config.SelectionConfig`, nowhere else) into the
simultaneous multiplier when ``selection.simultaneous`` is on.

Every per-query choice of the engine calls :func:`select_per_query`: pool mode of `cpo run` (the held-out
evaluation and ``assignment.parquet`` read the same result), :class:`~cpo_engine.policy.policy.Policy`
(`cpo assign`, `cpo optimize`), `cpo nightly`'s pool search, verification's per-query arm routing and
the calibration study.
"""

from __future__ import annotations

import numpy as np


def select_per_query(effect: np.ndarray, se: np.ndarray | None = None, z: float = 0.0, *,
                     bias: np.ndarray | None = None, incumbent: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each query's chosen candidate and the bound the choice maximized.

    Parameters
    ----------
    effect : (n_queries, n_candidates)
        Estimated effect of each candidate on each query (measured from the reference).
    se : (n_queries, n_candidates), optional
        Its standard error; None (or ``z = 0``) chooses by the point estimate.
    z : float
        The lower-confidence-bound multiplier (already simultaneous when the selection is).
    bias : (n_candidates,), optional
        Added to every query's bound (-inf excludes a candidate).
    incumbent : int, optional
        The candidate a query keeps unless another one's bound is strictly higher.

    Returns
    -------
    choice : (n_queries,) int64
    objective : (n_queries, n_candidates) the bounds ``effect - z * se + bias``.
    """
    objective = np.asarray(effect, dtype=np.float64)
    if se is not None and z:
        objective = objective - float(z) * np.asarray(se, dtype=np.float64)
    if bias is not None:
        objective = objective + np.asarray(bias, dtype=np.float64)[None, :]
    ranked = np.where(np.isnan(objective), -np.inf, objective)
    choice = np.argmax(ranked, axis=1).astype(np.int64)
    if incumbent is not None:
        rows = np.arange(len(choice))
        stay = ~(ranked[rows, choice] > ranked[:, int(incumbent)])
        choice[stay] = int(incumbent)
    return choice, objective


__all__ = ["select_per_query"]
