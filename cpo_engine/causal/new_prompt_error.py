"""The error of a predicted uplift for a prompt no LLM ever ran: the part the prompt embedding does not explain.

The causal model's interval on a prompt's predicted uplift, ``phibar^T B (T_c - T_base) +- z se``, holds only the
estimation error of ``B``. A prompt that was never logged also carries an error of its own: the linear head
in the prompt PCA coordinates does not know everything that makes one prompt better than another (two
prompts with nearly the same embedding can score 10 points apart). On SmolLM2 the coefficient-only 95%
intervals covered the measured uplift of searched prompts for 62% and 9% of them.

:func:`leave_prompts_out` measures that error on the logged prompts themselves. Each candidate prompt ``p`` of
the static choice in turn is treated as never logged: the model is refitted, nuisances included, on the rows
of the other prompts in coordinates of the others' affine span (what a prompt PCA fitted without ``p`` sees: a
prompt the fit never saw is seen only through the directions the others span; exact when the prompt PCA keeps
every direction of the logged prompts; and in the full coordinates the fit is not identified), and that fit predicts ``p``'s uplift over a reference prompt (the static
choice, or the next best when ``p`` is the choice). The residual is that prediction minus ``p``'s uplift as
the static choice values it (measured cell means on a grid, doubly robust on logs, paired by query).

Why a full refit and not the final stage on the kept residuals: the nuisances ``E[Y|X]`` and ``E[T|X]`` were
fitted with ``p``'s rows, so the residuals of the other prompts carry an offset of ``p``'s own deviation
divided by the number of prompts, along the direction of ``T_p``; a final stage refitted on them reads that
offset back as a slope towards ``T_p`` and "predicts" most of ``p``'s deviation. The refits use the fitted
penalty (``final_alpha_``) instead of choosing it again by cross-validation: the head the predictions use
is the unpenalized one, which the penalty does not change, and the choice costs 40 times the fit.

Why a variance inflation and not split-conformal over prompts. Each residual ``r_p`` is the sum of the
prompt-level error (variance ``sigma^2``), the refit's coefficient error (``se_pred^2``) and the noise of the
valued uplift (``se_meas^2``): ``r_p ~ N(0, v_p + sigma^2)``, ``v_p = se_pred^2 + se_meas^2``. The conformal
interval ``pred +- q``, ``q`` the ``ceil((n+1)(1-alpha))``-th smallest ``|r|``, is finite-sample valid but
unbounded at 95% with fewer than 19 logged prompts (6 to 16 in the logs this engine meets), and it would count
the valued uplifts' noise as prompt error.

Why the interval integrates over ``sigma^2`` instead of plugging in an estimate. From 6 prompts whose valued
uplifts are noisy, ``sigma^2`` is barely known: the moment estimate ``max(0, mean(r^2) - mean(v))`` (kept as
``sigma``, for display) is 0 whenever the residuals happen to fall within their noise, and ``pred +- t
sqrt(se^2 + 0)`` then covered 5 of 9 searched prompts on SmolLM2 (bench/results/loop_smollm2_*_20261207). The
interval here is the predictive interval of the confidence-distribution approach to random-effects
meta-analysis (Nagashima, Noma and Furukawa 2019, Stat Methods Med Res 28(6)): ``Q(s^2) = sum r_p^2 / (v_p +
s^2)`` is chi-square with ``n`` degrees of freedom at the true ``sigma^2`` (the residuals have mean 0), so
``H(s^2) = P(chi2_n >= Q(s^2))`` is a confidence distribution for ``sigma^2`` (the Q-profile; an atom at 0 of
mass ``H(0)``); the interval's half-width ``h`` solves ``E_H[2 Phi(h / sqrt(se^2 + s^2)) - 1] = level``, the
expectation over a fixed grid of ``H``'s quantiles (deterministic). Where the residuals rule a large
``sigma`` out, it is about the plug-in interval; where they cannot, it is as wide as they leave possible.
Coverage on real outcomes: bench/bench_new_prompt_coverage.py (docs/benchmarks.md); Monte Carlo:
tests/test_new_prompt_error.py.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from cpo_engine.exceptions import CPOError

log = logging.getLogger(__name__)

#: quantiles of the confidence distribution of sigma^2 the predictive interval averages over
GRID = 2000

#: the method line of a predicted uplift whose interval includes the prompt-level error
LABEL = "causal model + prompt-level error (leave-one-prompt-out)"


@dataclass(frozen=True)
class NewPromptError:
    """The prompt-level error of predicted uplifts for new prompts, from leave-one-prompt-out refits.

    Attributes
    ----------
    sigma : float
        Moment estimate of the prompt-level error's standard deviation (0 when the residuals are no larger than
        their noise), for display; the interval averages over the confidence distribution of ``sigma^2``.
    n_prompts : int
        Logged prompts held out in turn (the residuals).
    mean_sq_residual, mean_noise_var : float
        ``mean(r^2)`` and ``mean(se_pred^2 + se_meas^2)`` behind ``sigma``.
    residuals : list of dict
        Per held-out prompt: prompt_id, reference (the prompt its uplift is over), predicted, measured,
        residual, se_pred, se_meas.
    """

    sigma: float
    n_prompts: int
    mean_sq_residual: float
    mean_noise_var: float
    residuals: list[dict[str, Any]] = field(default_factory=list)
    method: str = LABEL

    def sigma2_quantiles(self, k: int = GRID) -> np.ndarray | None:
        """``k`` quantiles (at ``(i + 1/2) / k``) of the Q-profile confidence distribution of ``sigma^2`` from the
        stored residuals; None when they are missing (a policy.json written before they were stored)."""
        try:
            r = np.array([x["residual"] for x in self.residuals], dtype=np.float64)
            v = np.array([x["se_pred"] ** 2 + x["se_meas"] ** 2 for x in self.residuals], dtype=np.float64)
        except (KeyError, TypeError):
            return None
        if len(r) < 3 or not (np.all(np.isfinite(r)) and np.all(np.isfinite(v)) and np.all(v > 0)):
            return None
        return q_profile_quantiles(r, v, k)

    def half_width(self, se_coef: Any, level: float = 0.95) -> np.ndarray:
        """Half-width of the ``level`` interval of a new prompt's predicted uplift whose coefficient error is
        ``se_coef``: the predictive interval over the confidence distribution of ``sigma^2`` (module docstring);
        without stored residuals, the plug-in ``t_{n-1} sqrt(se_coef^2 + sigma^2)``."""
        se = np.asarray(se_coef, dtype=np.float64)
        s2 = self.sigma2_quantiles()
        if s2 is None:
            from scipy.stats import t

            return float(t.ppf(0.5 + level / 2, max(self.n_prompts - 1, 1))) * np.sqrt(se ** 2 + self.sigma ** 2)
        return predictive_half_width(se, s2, level)

    def interval(self, pred: Any, se_coef: Any, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """``pred -+ half_width(se_coef)``."""
        half = self.half_width(se_coef, level)
        return np.asarray(pred, dtype=np.float64) - half, np.asarray(pred, dtype=np.float64) + half

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "NewPromptError | None":
        if not d or d.get("sigma") is None:
            return None
        return cls(float(d["sigma"]), int(d["n_prompts"]), float(d["mean_sq_residual"]), float(d["mean_noise_var"]),
                   list(d.get("residuals", [])), d.get("method", LABEL))


def q_profile_quantiles(r: np.ndarray, v: np.ndarray, k: int = GRID) -> np.ndarray:
    """Quantiles at ``(i + 1/2) / k`` of the Q-profile confidence distribution ``H(s^2) = P(chi2_n >= Q(s^2))``,
    ``Q(s^2) = sum r^2 / (v + s^2)``, of the variance ``sigma^2`` in ``r_i ~ N(0, v_i + sigma^2)``: 0 up to
    ``H(0)``, above it the root of ``Q(s^2) = chi2_n.ppf(1 - u)`` (Q falls in ``s^2``; bisection)."""
    from scipy.stats import chi2

    r2, v = np.asarray(r, dtype=np.float64) ** 2, np.asarray(v, dtype=np.float64)
    n = len(r2)
    u = (np.arange(k) + 0.5) / k

    def q(s2: np.ndarray) -> np.ndarray:
        return (r2[None, :] / (v[None, :] + s2[:, None])).sum(1)

    out = np.zeros(k)
    above = u > chi2.sf(float(q(np.zeros(1))[0]), n)
    if above.any() and r2.sum() > 0:
        target = chi2.ppf(1 - u[above], n)
        lo, hi = np.zeros_like(target), r2.sum() / target  # Q(s^2) < sum(r^2) / s^2
        for _ in range(80):
            mid = (lo + hi) / 2
            high = q(mid) > target
            lo, hi = np.where(high, mid, lo), np.where(high, hi, mid)
        out[above] = (lo + hi) / 2
    return out


def predictive_half_width(se: Any, s2: np.ndarray, level: float = 0.95) -> np.ndarray:
    """``h`` with ``mean_k [2 Phi(h / sqrt(se^2 + s2_k)) - 1] = level`` for each ``se`` (bisection)."""
    from scipy.stats import norm

    se = np.asarray(se, dtype=np.float64)
    flat = se.reshape(-1)
    sd = np.sqrt(flat[:, None] ** 2 + np.asarray(s2, dtype=np.float64)[None, :])
    sd = np.maximum(sd, 1e-300)
    lo, hi = np.zeros(len(flat)), 10.0 * sd.max(1) / max(1.0 - level, 1e-6)
    for _ in range(80):
        mid = (lo + hi) / 2
        short = (2 * norm.cdf(mid[:, None] / sd) - 1).mean(1) < level
        lo, hi = np.where(short, mid, lo), np.where(short, hi, mid)
    return ((lo + hi) / 2).reshape(se.shape)


def from_residuals(rows: list[dict[str, Any]]) -> NewPromptError | None:
    """:class:`NewPromptError` of held-out residual rows (keys residual, se_pred, se_meas); None under 3."""
    ok = [r for r in rows if all(np.isfinite(r[k]) for k in ("residual", "se_pred", "se_meas"))]
    if len(ok) < 3:
        return None
    r2 = float(np.mean([r["residual"] ** 2 for r in ok]))
    noise = float(np.mean([r["se_pred"] ** 2 + r["se_meas"] ** 2 for r in ok]))
    return NewPromptError(float(np.sqrt(max(0.0, r2 - noise))), len(ok), r2, noise, ok)


def span_coordinates(T_seen: np.ndarray, tol: float = 1e-8) -> Callable[[np.ndarray], np.ndarray]:
    """Coordinates in an orthonormal basis of the affine span of ``T_seen`` (k, d_T): what a prompt PCA fitted on
    these prompts alone sees of any prompt (a prompt outside the span is projected onto it). A fit in these
    coordinates is identified; one in the full ones is not when the span has fewer dimensions than ``d_T``."""
    T_seen = np.asarray(T_seen, dtype=np.float64)
    mean = T_seen.mean(0)
    _, sv, vt = np.linalg.svd(T_seen - mean, full_matrices=False)
    basis = vt[sv > tol * max(float(sv.max(initial=0.0)), 1e-300)].T
    return lambda t: (np.asarray(t, dtype=np.float64) - mean) @ basis


def leave_prompts_out(model: Any, X: np.ndarray, T: np.ndarray, choice: Any, *, max_prompts: int = 8,
                      min_groups: int = 10) -> NewPromptError | None:
    """Leave-one-prompt-out residuals of predicted static uplifts and the prompt-level error they imply.

    Parameters
    ----------
    model : CausalRewardModel
        Fitted, keeping its training rows (``_Y, _T, _X, _groups``); each row's prompt is read off its ``T`` row.
    X : ndarray (n_queries, d_X)
        Features of the queries ``choice.queries`` index (the run's query PCA).
    T : ndarray (n_prompts, d_T)
        The logged prompts' coordinates (index as the static choice's prompts).
    choice : StaticChoice
        :func:`~cpo_engine.causal.static_choice.choose_static` on the same rows: its per-query values
        (``pseudo``) value each held-out prompt's uplift.
    max_prompts : int
        At most this many prompts are held out (evenly over the candidates ranked by value): one refit each, so a
        fit that stores this (``learn_state``: `cpo run`, `cpo fit`) costs up to that many fits more.

    Returns None when the model keeps no training rows, or fewer than 3 prompts can be held out.
    """
    data = [getattr(model, k, None) for k in ("_Y", "_T", "_X", "_groups")]
    psi, uq = getattr(choice, "pseudo", None), getattr(choice, "queries", None)
    if any(d is None for d in data) or psi is None or uq is None or not hasattr(model, "final_alpha_"):
        return None
    Yr, Tr, Xr, groups = data
    w = getattr(model, "_w", None)
    T = np.asarray(T, dtype=np.float64)
    row_prompt = np.full(len(Yr), -1)
    for j, t in enumerate(T):
        row_prompt[np.all(np.abs(Tr - t) <= 1e-9 * (1 + np.abs(t)), axis=1)] = j
    ranked = [v.index for v in sorted(choice.values, key=lambda v: -v.value)]
    if len(ranked) < 3:
        return None
    held = [ranked[i] for i in np.unique(np.linspace(0, len(ranked) - 1, min(max_prompts, len(ranked))).astype(int))]
    params = model.get_params(deep=False) | {"final_alpha": float(model.final_alpha_)}
    Xq = np.asarray(X, dtype=np.float64)[uq]
    rows = []
    for p in held:
        ref = choice.index if p != choice.index else next(i for i in ranked if i != p)
        keep = np.flatnonzero(row_prompt != p)
        if len(np.unique(groups[keep])) < min_groups:
            continue
        seen = np.unique(row_prompt[keep][row_prompt[keep] >= 0])
        coords = span_coordinates(T[seen])
        try:
            fit = type(model)(**params).fit(Yr[keep], coords(Tr[keep]), X=Xr[keep], groups=groups[keep],
                                            sample_weight=None if w is None else w[keep])
        except (CPOError, RuntimeError, np.linalg.LinAlgError) as exc:  # too little left without p: the estimate rests on the other prompts
            log.warning("leave-one-prompt-out: the refit without prompt %s failed (%s); it is left out of the "
                        "prompt-level error", choice.values_by_index[p].prompt_id, exc)
            continue
        pred, se_pred = fit.linear_head().static_effect(Xq, coords(T[[p]]), t_base=coords(T[ref]))
        d = psi[:, p] - psi[:, ref]
        d = d[np.isfinite(d)]
        if len(d) < 2:
            continue
        meas, se_meas = float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))
        rows.append({"prompt_id": str(choice.values_by_index[p].prompt_id),
                     "reference": str(choice.values_by_index[ref].prompt_id), "predicted": float(pred[0]),
                     "measured": meas, "residual": float(pred[0]) - meas, "se_pred": float(se_pred[0]),
                     "se_meas": se_meas})
    return from_residuals(rows)


__all__ = ["LABEL", "NewPromptError", "from_residuals", "leave_prompts_out", "predictive_half_width",
           "q_profile_quantiles", "span_coordinates"]
