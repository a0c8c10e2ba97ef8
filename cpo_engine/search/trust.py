"""Trust region: keep the search where the logged prompts give the causal model support.

A linear effect model extrapolates without limit: the further a candidate's representation ``T_c``
lies from the prompts the data was logged with, the less its predicted effect means. The region is
the Mahalanobis ball around the logged prompts' mean, with a shrunk covariance (a handful of logged
prompts in a k_T-dimensional space gives a singular sample covariance), whose radius is ``slack``
times the largest distance of a logged prompt. Candidates beyond it are excluded or penalized.
"""

from __future__ import annotations

import numpy as np

from cpo_engine.exceptions import ConfigError, NotFittedError

MODES = ("exclude", "penalize", "off")


class TrustRegion:
    """Mahalanobis support of the logged prompts in T space.

    Parameters
    ----------
    mode : {"exclude", "penalize", "off"}
        ``exclude``: candidates beyond the radius get objective -inf; ``penalize``: they lose
        ``penalty * (distance / radius - 1)`` (in effect units); ``off``: distances are reported only.
    slack : float
        Radius as a multiple of the largest Mahalanobis distance among the logged prompts.
    shrinkage : float in [0, 1]
        Weight of the scaled identity in the covariance (Ledoit-Wolf style target).
    penalty : float
        Objective lost per unit of relative excess distance in ``penalize`` mode.
    """

    def __init__(self, mode: str = "exclude", slack: float = 1.25, shrinkage: float = 0.2,
                 penalty: float = 0.1) -> None:
        self.mode, self.slack, self.shrinkage, self.penalty = mode, slack, shrinkage, penalty

    def _validate(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"trust_region mode must be one of {MODES}, got '{self.mode}'")
        if self.slack <= 0 or not 0 <= self.shrinkage <= 1 or self.penalty < 0:
            raise ConfigError("trust region needs slack > 0, shrinkage in [0, 1] and penalty >= 0, got "
                              f"slack={self.slack}, shrinkage={self.shrinkage}, penalty={self.penalty}")

    def fit(self, T_logged: np.ndarray) -> "TrustRegion":
        """Fit the ball to the logged prompts' representations (n_prompts, d_T); returns self."""
        self._validate()
        T = np.asarray(T_logged, dtype=np.float64)
        if T.ndim != 2 or T.shape[0] < 2:
            raise ConfigError(f"the trust region needs at least 2 logged prompts in a 2-D array, got shape {T.shape}")
        self.mean_ = T.mean(axis=0)
        S = np.cov(T, rowvar=False).reshape(T.shape[1], T.shape[1])
        scale = max(float(np.trace(S)) / T.shape[1], 1e-12)
        S = (1 - self.shrinkage) * S + self.shrinkage * scale * np.eye(T.shape[1])
        self.precision_ = np.linalg.pinv(S + 1e-9 * scale * np.eye(T.shape[1]))
        self.logged_distance_ = self._dist(T)
        self.radius_ = self.slack * float(self.logged_distance_.max())
        return self

    def _dist(self, T: np.ndarray) -> np.ndarray:
        d = np.asarray(T, dtype=np.float64) - self.mean_
        return np.sqrt(np.clip(np.einsum("ij,jk,ik->i", d, self.precision_, d), 0.0, None))

    def distance(self, T: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each row of ``T`` from the logged prompts' mean."""
        if not hasattr(self, "precision_"):
            raise NotFittedError("TrustRegion")
        return self._dist(T)

    def bias(self, T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(objective bias, distance) per candidate: 0 inside; -inf or a penalty outside."""
        dist = self.distance(T)
        outside = dist > self.radius_
        if self.mode == "exclude":
            return np.where(outside, -np.inf, 0.0), dist
        if self.mode == "penalize":
            return -self.penalty * np.clip(dist / self.radius_ - 1.0, 0.0, None), dist
        return np.zeros_like(dist), dist


__all__ = ["TrustRegion", "MODES"]
