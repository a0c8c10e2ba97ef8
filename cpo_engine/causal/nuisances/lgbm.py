"""``lgbm``: LightGBM's regressor (the ``lightgbm`` extra). Its fitted state is not saved with a model."""

from __future__ import annotations

from typing import Any


def make_lgbm(random_state: int = 0, device: str = "auto") -> Any:
    """``LGBMRegressor(n_estimators=200)``; ``device`` is ignored (CPU build)."""
    from cpo_engine.utils import require

    lightgbm = require("lightgbm", extra="lightgbm")
    return lightgbm.LGBMRegressor(n_estimators=200, random_state=random_state, verbose=-1)


__all__ = ["make_lgbm"]
