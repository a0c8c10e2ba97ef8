"""Configuration of the causal reward model: one dataclass that `cpo fit`, `cpo run`, `cpo optimize`,
`cpo evaluate` and `cpo nightly` all compose, validated when the config is read (before any
embedding runs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cpo_engine.causal.nuisances import check_nuisance_name
from cpo_engine.exceptions import ConfigError

FEATURIZERS = ("constant", "linear", "poly2")
BACKENDS = ("serial", "ray")


@dataclass
class CausalConfig:
    """The cross-fitted DML reward model (see docs/causal.md)."""

    featurizer: str = field(default="linear", metadata={"choices": FEATURIZERS})
    """phi(X) of the final stage theta(X) = B^T phi(X): 'constant', 'linear' ([1, X]) or 'poly2'."""
    model_y: str = "ridge"
    """Nuisance for E[Y|X]: a registered name (ridge, mlp, hgb, lgbm, cuml_ridge)."""
    model_t: str = "ridge"
    """Nuisance for E[T|X]: a registered name."""
    cv: int = 5
    """Cross-fitting folds (grouped by query)."""
    final_alpha: float | str = "cv"
    """Ridge penalty on the heterogeneous part of theta(X); 'cv' picks it by query-grouped
    cross-validation (see docs/causal.md); 0 is plain OLS (econml's LinearDML)."""
    backend: str = field(default="serial", metadata={"choices": BACKENDS})
    """Cross-fitting folds in-process ('serial') or as Ray tasks ('ray')."""

    def __post_init__(self) -> None:
        if self.featurizer not in FEATURIZERS:
            raise ConfigError(f"causal.featurizer must be one of {FEATURIZERS}, got '{self.featurizer}'")
        check_nuisance_name(self.model_y, "causal.model_y")
        check_nuisance_name(self.model_t, "causal.model_t")
        if isinstance(self.cv, bool) or not isinstance(self.cv, int) or self.cv < 2:
            raise ConfigError(f"causal.cv must be an int >= 2, got {self.cv!r}")
        if isinstance(self.final_alpha, str):
            if self.final_alpha != "cv":
                raise ConfigError(f"causal.final_alpha must be a number >= 0 or 'cv', got '{self.final_alpha}'")
        elif self.final_alpha < 0:
            raise ConfigError(f"causal.final_alpha must be >= 0, got {self.final_alpha}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"causal.backend must be one of {BACKENDS}, got '{self.backend}'")

    def make_model(self, *, device: str = "auto", random_state: int = 0) -> Any:
        """A fresh :class:`~cpo_engine.causal.dml.CausalRewardModel` with these settings."""
        from cpo_engine.causal.dml import CausalRewardModel

        return CausalRewardModel(model_y=self.model_y, model_t=self.model_t, featurizer=self.featurizer, cv=self.cv,
                                 final_alpha=self.final_alpha, backend=self.backend, device=device,
                                 random_state=random_state)


__all__ = ["CausalConfig", "check_nuisance_name", "FEATURIZERS", "BACKENDS"]
