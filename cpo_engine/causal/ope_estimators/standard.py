"""The standard estimators (Dudik, Langford & Li 2011; Swaminathan & Joachims 2015; Kallus & Uehara 2019),
computed with every evaluation:

- ``dm``: direct method, ``mean_q sum_a pi(a|q) q_hat(q, a)``: the reward model alone (*predicted*);
- ``ipw``: ``mean w y``;
- ``snips``: self-normalized IPW, ``sum w y / sum w``;
- ``dr``: doubly robust, ``dm + mean w (y - q_hat)``;
- ``sndr``: ``dm + sum w (y - q_hat) / sum w``.

For the self-normalized ones the influence values are those of the ratio (delta method).
"""

from __future__ import annotations

import numpy as np

from cpo_engine.causal.evidence import PREDICTED
from cpo_engine.causal.ope_estimators import LoggedRows, register_estimator


def _ratio_influence(num: np.ndarray, W: np.ndarray) -> tuple[float, np.ndarray]:
    """``sum num / sum W`` and the per-query influence values of that ratio around it (delta method)."""
    value = num.sum() / W.sum() if W.sum() > 0 else 0.0
    return value, (num - value * W) / max(W.mean(), 1e-300)


@register_estimator("dm", label="direct method (reward model)", needs_reward_model=True, weighted=False,
                    evidence=PREDICTED, note="interval covers query sampling only, not the reward model's error",
                    default=True)
def dm(rows: LoggedRows) -> np.ndarray:
    return rows.D


@register_estimator("ipw", label="IPW", default=True)
def ipw(rows: LoggedRows) -> np.ndarray:
    return rows.Yw


@register_estimator("snips", label="self-normalized IPW", default=True)
def snips(rows: LoggedRows) -> np.ndarray:
    value, influence = _ratio_influence(rows.Yw, rows.W)
    return value + influence


@register_estimator("dr", label="doubly robust", needs_reward_model=True, default=True)
def dr(rows: LoggedRows) -> np.ndarray:
    return rows.D + rows.Rw


@register_estimator("sndr", label="self-normalized doubly robust", needs_reward_model=True, default=True)
def sndr(rows: LoggedRows) -> np.ndarray:
    corr, influence = _ratio_influence(rows.Rw, rows.W)
    return rows.D + corr + influence


__all__ = ["dm", "dr", "ipw", "sndr", "snips"]
