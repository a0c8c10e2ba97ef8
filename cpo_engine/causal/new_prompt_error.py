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
valued uplift (``se_meas^2``); so ``sigma^2 = max(0, mean(r^2) - mean(se_pred^2 + se_meas^2))`` (method of
moments) and a new prompt's interval is ``pred +- t_{n-1} sqrt(se^2 + sigma^2)``, ``se`` its coefficient
error. The conformal interval ``pred +- q``, ``q`` the ``ceil((n+1)(1-alpha))``-th smallest ``|r|``, is
finite-sample valid but unbounded at 95% with fewer than 19 logged prompts (6 to 16 in the logs this engine
meets), and it would count the valued uplifts' noise as prompt error. The Student quantile with ``n - 1``
degrees of freedom widens the interval for ``sigma`` estimated from few prompts. Coverage on real outcomes:
bench/bench_new_prompt_coverage.py (docs/benchmarks.md).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from cpo_engine.exceptions import CPOError

log = logging.getLogger(__name__)

#: the method line of a predicted uplift whose interval includes the prompt-level error
LABEL = "causal model + prompt-level error (leave-one-prompt-out)"


@dataclass(frozen=True)
class NewPromptError:
    """The prompt-level error of predicted uplifts for new prompts, from leave-one-prompt-out refits.

    Attributes
    ----------
    sigma : float
        Standard deviation of the prompt-level error (0 when the residuals are no larger than their noise).
    n_prompts : int
        Logged prompts held out in turn (the residuals); the Student quantile has ``n_prompts - 1`` df.
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

    def quantile(self, level: float = 0.95) -> float:
        """The two-sided ``level`` quantile of Student's t with ``n_prompts - 1`` degrees of freedom."""
        from scipy.stats import t

        return float(t.ppf(0.5 + level / 2, max(self.n_prompts - 1, 1)))

    def se(self, se_coef: Any) -> np.ndarray:
        """The standard error of a new prompt's predicted uplift: coefficient error and prompt-level error."""
        return np.sqrt(np.asarray(se_coef, dtype=np.float64) ** 2 + self.sigma ** 2)

    def interval(self, pred: Any, se_coef: Any, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """``pred -+ t_{n-1} sqrt(se_coef^2 + sigma^2)``."""
        half = self.quantile(level) * self.se(se_coef)
        return np.asarray(pred, dtype=np.float64) - half, np.asarray(pred, dtype=np.float64) + half

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "NewPromptError | None":
        if not d or d.get("sigma") is None:
            return None
        return cls(float(d["sigma"]), int(d["n_prompts"]), float(d["mean_sq_residual"]), float(d["mean_noise_var"]),
                   list(d.get("residuals", [])), d.get("method", LABEL))


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


__all__ = ["LABEL", "NewPromptError", "from_residuals", "leave_prompts_out", "span_coordinates"]
