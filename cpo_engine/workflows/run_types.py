"""The data types `cpo run` passes between its steps (:mod:`cpo_engine.workflows.run`), its outputs
(:mod:`cpo_engine.workflows.run_outputs`) and its policy values (:mod:`cpo_engine.workflows.ope`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from cpo_engine.policy.policy import Policy
    from cpo_engine.causal.policy_values import PolicyValues
    from cpo_engine.causal.static_choice import StaticChoice
    from cpo_engine.causal.head import LinearHead

POLICY_LABELS = {"causal_lcb": "per-query, causal (LCB)", "causal_point": "per-query, causal (point)",
                 "non_causal": "per-query, non-causal"}


@dataclass
class Logs:
    """The rows the models are fitted on (indices into the representations)."""

    q: np.ndarray
    p: np.ndarray
    y: np.ndarray
    w: np.ndarray | None = None
    propensity: np.ndarray | None = None
    """P(logged prompt | query) of each row, from the logs' ``propensity`` column (None without one)."""


@dataclass
class PoolResult:
    """The per-query choice among the logged prompts, and its check against held-out outcomes."""

    policy: Any
    """:class:`~cpo_engine.search.pool.PoolPolicy` over every query (train and held-out), chosen once by
    ``run_policy``: the held-out evaluation scores its held-out rows and ``search/assignment.parquet`` is its
    table (:meth:`Policy.assignment`), so the two cannot disagree."""
    head: LinearHead
    """The causal model's head, referenced to the incumbent (or the mean prompt)."""
    static_index: int
    incumbent_index: int
    train_means: np.ndarray
    Y_test: np.ndarray
    test_choices: dict[str, np.ndarray]
    evaluations: dict[str, dict[str, Any]]
    tiers: list[dict[str, Any]]
    non_causal_mean_effect: np.ndarray
    static_rank_agreement: float
    static_choice: StaticChoice | None = None
    """:class:`~cpo_engine.causal.static_choice.StaticChoice`: the best static prompt (``static_index``), valued
    on the training logs, with every candidate's value and the contenders the logs cannot separate from it."""
    policy_values: PolicyValues | None = None
    """:class:`~cpo_engine.causal.policy_values.PolicyValues`: every policy's held-out value, measured or estimated."""
    run_policy: Policy | None = None
    """The run's :class:`~cpo_engine.policy.Policy` over the logged prompts (saved as
    ``model/policy.json``), which made ``policy``."""


__all__ = ["POLICY_LABELS", "Logs", "PoolResult"]
