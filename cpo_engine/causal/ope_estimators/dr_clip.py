"""``dr_clip``: doubly robust with the importance weights clipped at a stated :data:`CLIP` (20).

``dm + mean min(w, 20) (y - q_hat)`` (weight clipping as in Bottou et al. 2013, inside DR as in Su et al.
2020). A row whose weight exceeds 20 (for a deterministic target: a logging propensity below 0.05) counts
with weight 20. Its bias against DR is ``mean (w - 20)+ (mu - q_hat)``: only the reward model's error, and only
on the choices the logs rarely made; in exchange the variance of the correction is bounded by a weight of
20 rather than ``1 / ope.min_propensity`` (100 by default). Use it as the headline (``ope.estimator=dr_clip``)
when DR's interval is wide because of a few heavy weights, and compare it with ``dr``: they agree when no
weight is clipped. The weight diagnostics (ESS, clipped share) reported with it are those of the unclipped
weights, which are what the logs' overlap is.

This module is the whole estimator: it registers itself, so ``ope.estimator: dr_clip`` and
``cpo ope --estimator dr_clip`` work with no other file changed.
"""

from __future__ import annotations

import numpy as np

from cpo_engine.causal.ope_estimators import LoggedRows, register_estimator

CLIP = 20.0
"""The largest importance weight a row counts with."""


@register_estimator("dr_clip", label=f"doubly robust, weights clipped at {CLIP:g}", needs_reward_model=True)
def dr_clip(rows: LoggedRows) -> np.ndarray:
    """Per-query ``dm + mean min(w, CLIP) (y - q_hat)``."""
    w = np.minimum(rows.w, CLIP)
    return rows.D + rows.means(w * (rows.y - rows.q_hat_logged))


__all__ = ["CLIP", "dr_clip"]
