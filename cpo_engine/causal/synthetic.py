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


@dataclass
class SyntheticBandit:
    """Logged bandit feedback with known cell means: for checking off-policy estimators."""

    x: np.ndarray  # (n_queries,) query feature
    mu: np.ndarray  # (n_queries, n_prompts) true success probability of every cell
    pi0: np.ndarray  # (n_queries, n_prompts) logging policy
    q: np.ndarray  # (n,) logged rows: query index
    a: np.ndarray  # (n,) logged prompt
    y: np.ndarray  # (n,) 0/1 score


def bandit_cells(x: np.ndarray, n_prompts: int = 5) -> np.ndarray:
    """True success probability of every (query, prompt) cell: logistic in x, with a prompt-specific slope
    (the best prompt depends on the query) and offset."""
    slope, offset = np.linspace(-1, 1, n_prompts), np.linspace(0, 0.5, n_prompts)
    return 1 / (1 + np.exp(-(x[:, None] * slope[None, :] + offset[None, :])))


def make_bandit(n_queries: int = 300, n_prompts: int = 5, rows_per_query: int = 2, strength: float = 1.5,
                exploration: float = 0.0, seed: int | np.random.Generator = 0) -> SyntheticBandit:
    """Draw queries x ~ N(0, 1) and logs from a confounded softmax policy ``pi0(a|x) ~ exp(strength * x *
    slope_a)`` mixed with ``exploration`` uniform; the prompts with high slope are both logged for high x
    and best there, so the naive mean per prompt is biased. Population values of any policy that is a
    function of x are means over fresh draws of x (see :func:`bandit_cells`)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n_queries)
    mu = bandit_cells(x, n_prompts)
    logit = strength * x[:, None] * np.linspace(-1, 1, n_prompts)[None, :]
    pi0 = np.exp(logit - logit.max(1, keepdims=True))
    pi0 = (1 - exploration) * pi0 / pi0.sum(1, keepdims=True) + exploration / n_prompts
    q = np.repeat(np.arange(n_queries), rows_per_query)
    a = np.minimum((pi0[q].cumsum(1) < rng.random(len(q))[:, None]).sum(1), n_prompts - 1)
    y = (rng.random(len(q)) < mu[q, a]).astype(np.float64)
    return SyntheticBandit(x, mu, pi0, q, a, y)
