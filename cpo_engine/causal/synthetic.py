"""Seeded synthetic DML data with a known effect, for tests and benchmarks.

Queries ``q`` have features ``X_q``; each logged row draws a prompt representation
``T = X_q A + noise`` (confounded: the query shifts which prompts are logged) and a score

    Y = g(X_q) + u_q + (B^T phi(X_q))^T T + e,    phi(X) = [1, X]

with ``g`` nonlinear, a per-query random effect ``u_q`` (rows of a query are correlated) and
``B`` known, so estimates can be checked against the truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SyntheticDML:
    """Arrays of one synthetic data set and its true final-stage coefficients."""

    Y: np.ndarray
    T: np.ndarray
    X: np.ndarray
    groups: np.ndarray
    coef: np.ndarray  # true B, shape (1 + d_x, d_t) for phi = [1, X]
    t_mean: np.ndarray  # true E[T | query] (the logging policy's mean), shape (n, d_t)

    def theta(self, X: np.ndarray) -> np.ndarray:
        """True ``theta(X)`` (n, d_T)."""
        return np.hstack([np.ones((len(X), 1)), X]) @ self.coef


def make_synthetic(n_groups: int = 200, rows_per_group: int = 5, d_x: int = 4, d_t: int = 3,
                   confounding: float = 1.0, heterogeneity: float = 0.5, noise: float = 0.5,
                   random_effect: float = 0.5, latent: float = 0.0, seed: int = 0) -> SyntheticDML:
    """Draw a data set; ``n = n_groups * rows_per_group`` rows.

    ``latent`` shifts T by ``latent * u_q``, the query effect on Y that X does not show: confounding
    that only the true ``E[T | query]`` (``t_mean``) removes.
    """
    rng = np.random.default_rng(seed)
    Xq = rng.normal(size=(n_groups, d_x))
    groups = np.repeat(np.arange(n_groups), rows_per_group)
    X = Xq[groups]
    A = rng.normal(size=(d_x, d_t)) * confounding / np.sqrt(d_x)
    uq = rng.normal(size=n_groups)
    t_mean = X @ A + latent * uq[groups][:, None]
    T = t_mean + rng.normal(size=(len(X), d_t))
    coef = np.vstack([rng.uniform(0.5, 1.5, size=(1, d_t)) * rng.choice([-1, 1], size=(1, d_t)),
                      heterogeneity * rng.normal(size=(d_x, d_t)) / np.sqrt(d_x)])
    theta = np.hstack([np.ones((len(X), 1)), X]) @ coef
    g = np.sin(X[:, 0]) + 0.5 * X[:, 1] ** 2 + X @ rng.normal(size=d_x) * 0.5
    u = uq[groups] * random_effect
    Y = g + u + (theta * T).sum(1) + rng.normal(size=len(X)) * noise
    return SyntheticDML(Y=Y, T=T, X=X, groups=groups, coef=coef, t_mean=t_mean)
