"""Monte Carlo checks of the causal model's intervals at its defaults.

Each replication draws :func:`~cpo_engine.causal.synthetic.make_synthetic` data (queries with a random
effect, so rows of one query are correlated and the covariance must be clustered; a known, heterogeneous
``theta(X)``), fits :class:`~cpo_engine.causal.dml.CausalRewardModel` and checks its 95% intervals of
``theta(X)`` on fixed evaluation queries against the truth. ``bench/bench_calibration.py`` runs these
at full size; ``tests/test_calibration.py`` runs small versions that fail when the statistics break.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import norm


@dataclass(frozen=True)
class CoverageDesign:
    """One coverage setting (defaults: 600 queries x 16 logged prompts, 4 query and 3 prompt features;
    with poly2 that is 45 coefficients, a parameters-per-query ratio like the bundled run's)."""

    n_groups: int = 600
    rows_per_group: int = 16
    d_x: int = 4
    d_t: int = 3
    heterogeneity: float = 0.5
    random_effect: float = 0.5
    slope_sd: float = 0.5
    """Per-query random slope: each query's effect of T deviates from ``theta(X)`` by N(0, slope_sd^2)
    per prompt feature, so a query's rows share errors through T and only a covariance clustered by
    query is right (``theta(X)``, the estimand, is the average over queries)."""
    latent: float = 0.0
    """Latent confounding (shifts T by the query effect X does not show); with ``known_policy`` the
    true E[T | query] is passed as ``t_hat``."""
    known_policy: bool = False
    n_eval: int = 20
    """Evaluation queries (fixed across replications)."""


def coverage_replication(design: CoverageDesign, seed: int, model_kwargs: dict | None = None,
                         level: float = 0.95) -> dict[str, Any]:
    """One fit: share of the ``n_eval x d_T`` intervals of ``theta(X)`` that cover the truth, the mean
    squared standardized error (1 when standard errors are right), the same for the sandwich around
    the penalized estimate (what intervals were before), and the average-effect coverage."""
    from cpo_engine.causal.dml import CausalRewardModel
    from cpo_engine.causal.inference import fit_final
    from cpo_engine.causal.synthetic import make_synthetic

    d = make_synthetic(n_groups=design.n_groups, rows_per_group=design.rows_per_group, d_x=design.d_x,
                       d_t=design.d_t, heterogeneity=design.heterogeneity, random_effect=design.random_effect,
                       latent=design.latent, seed=seed)
    if design.slope_sd > 0:
        eta = np.random.default_rng((seed, 7)).normal(0.0, design.slope_sd, size=(design.n_groups, design.d_t))
        d.Y = d.Y + (eta[d.groups] * d.T).sum(1)
    X_eval = np.random.default_rng(10_000).normal(size=(design.n_eval, design.d_x))
    truth = d.theta(X_eval)
    model = CausalRewardModel(device="cpu", random_state=seed, **(model_kwargs or {}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(d.Y, d.T, X=d.X, groups=d.groups, t_hat=d.t_mean if design.known_policy else None)
    lo, hi = model.const_marginal_effect_interval(X_eval, alpha=1 - level)
    z = norm.ppf(0.5 + level / 2)
    se = (hi - lo) / (2 * model._quantile(1 - level))
    center = (hi + lo) / 2
    out = {"coverage": float(np.mean((lo <= truth) & (truth <= hi))),
           "mean_z2": float(np.mean(((center - truth) / se) ** 2)),
           "average_effect_covered": float(np.mean(np.abs(model._inference_coef()[0] - d.coef[0])
                                                   <= z * np.sqrt(np.diag(model.cov_)[:design.d_t]))),
           "final_alpha": float(model.final_alpha_)}
    if model.final_alpha_ > 0:  # the sandwich around the shrunk estimate: the intervals before
        phi = model.featurizer_.transform(model._X)
        pen = fit_final(phi, model.t_res_, model.y_res_, groups=model._groups, alpha=model.final_alpha_)
        pe = model.featurizer_.transform(X_eval)
        cov4 = pen.cov.reshape(phi.shape[1], design.d_t, phi.shape[1], design.d_t)
        se_p = np.sqrt(np.clip(np.einsum("if,ftgt,ig->it", pe, cov4, pe), 0, None))
        out["coverage_penalized_sandwich"] = float(np.mean(np.abs(pe @ pen.coef - truth) <= z * se_p))
    else:
        out["coverage_penalized_sandwich"] = out["coverage"]
    return out


def coverage_study(reps: int, design: CoverageDesign | None = None, seed: int = 0,
                   model_kwargs: dict | None = None) -> dict[str, Any]:
    """``reps`` replications (seeds ``seed ..``): means with Monte Carlo standard errors (from the spread
    across replications; intervals within one replication share a fit)."""
    design = design or CoverageDesign()
    runs = [coverage_replication(design, seed + r, model_kwargs) for r in range(reps)]
    out: dict[str, Any] = {"design": asdict(design), "model": dict(model_kwargs or {}), "replications": reps,
                           "seed": seed}
    for key in ("coverage", "mean_z2", "average_effect_covered", "coverage_penalized_sandwich", "final_alpha"):
        v = np.array([r[key] for r in runs], dtype=float)
        out[key], out[key + "_mc_se"] = float(v.mean()), float(v.std(ddof=1) / np.sqrt(reps)) if reps > 1 else np.nan
    out["share_penalized"] = float(np.mean([r["final_alpha"] > 0 for r in runs]))
    return out


__all__ = ["CoverageDesign", "coverage_replication", "coverage_study"]
