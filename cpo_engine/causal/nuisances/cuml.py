"""``cuml_ridge``: cuML's GPU ridge, the twin of a fixed-penalty
:class:`~cpo_engine.causal.nuisances.ridge.TorchRidge` (the ``cuml`` extra, imported on first use).
Its fitted state is not saved with a model."""

from __future__ import annotations

from typing import Any


def make_cuml_ridge(alpha: float = 1.0) -> Any:
    """cuML ``Ridge(alpha)`` with an intercept, the twin of ``TorchRidge(alpha=alpha)``."""
    from cpo_engine.utils import require

    cuml = require("cuml", extra="cuml")
    return cuml.linear_model.Ridge(alpha=alpha, fit_intercept=True)


def make_cuml(random_state: int = 0, device: str = "auto") -> Any:
    """The registered ``cuml_ridge`` (penalty 1; ``random_state`` and ``device`` do not apply)."""
    return make_cuml_ridge()


__all__ = ["make_cuml", "make_cuml_ridge"]
