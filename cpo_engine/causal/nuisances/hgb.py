"""``hgb``: scikit-learn's HistGradientBoostingRegressor (single-output: wrapped per target column
by :func:`~cpo_engine.causal.nuisances.fit_nuisance`). Its fitted state is not saved with a model."""

from __future__ import annotations

from typing import Any


def make_hgb(random_state: int = 0, device: str = "auto") -> Any:
    """``HistGradientBoostingRegressor(max_iter=200)``; ``device`` is ignored (CPU only)."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(max_iter=200, random_state=random_state)


__all__ = ["make_hgb"]
