"""Diagnostics computed after every causal fit: nuisance fit, overlap, effective sample size,
conditioning. Problems are reported as :class:`CausalDiagnosticWarning` and kept in the report;
the estimator never switches silently to another model.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


class CausalDiagnosticWarning(UserWarning):
    """A fitted causal model whose identification or precision is doubtful."""


@dataclass
class FitDiagnostics:
    """What a user should look at before trusting a fitted causal reward model.

    Attributes
    ----------
    n_rows, n_groups, n_folds : int
        Rows fitted, distinct queries (clusters), cross-fitting folds.
    min_groups_per_fold : int
        Fewest queries held out by any fold.
    r2_y : float
        Out-of-fold R^2 of ``E[Y|X]`` (how much of the score the query alone explains).
    r2_t : list of float
        Out-of-fold R^2 of ``E[T|X]`` per prompt-feature dimension.
    overlap : list of float
        Share of each prompt-feature's variance left after ``E[T|X]`` (``1 - R^2`` on the
        residuals actually used). Near 0: the prompt is nearly determined by the query, so its
        effect is not identified.
    overlap_threshold : float
        Below this share, a warning is raised.
    ess : float
        Kish effective sample size of the final-stage information weights
        ``w_i * ||T_res_i||^2``: how many equally informative rows the fit is worth.
    ess_share : float
        ``ess / n_rows``.
    gram_condition : float
        Condition number of the column-normalized final-stage Gram matrix.
    final_mse : float
        Mean squared final-stage residual.
    cov_type : str
        Covariance used for standard errors.
    warnings : list of str
        Every warning raised by this fit, in order.
    """

    n_rows: int
    n_groups: int
    n_folds: int
    min_groups_per_fold: int
    r2_y: float
    r2_t: list[float]
    overlap: list[float]
    overlap_threshold: float
    ess: float
    ess_share: float
    gram_condition: float
    final_mse: float
    cov_type: str
    warnings: list[str] = field(default_factory=list)
    n_params: int = 0
    """Coefficients of the final stage (d_phi x d_T); 0 when not recorded (older saved models)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (infinite condition numbers become the string ``"inf"``)."""
        d = asdict(self)
        d["gram_condition"] = _json_float(self.gram_condition)
        return d

    def summary(self) -> str:
        """A few human-readable lines for logs and run reports."""
        lines = [
            f"rows={self.n_rows} queries={self.n_groups} folds={self.n_folds} "
            f"(min {self.min_groups_per_fold} queries/fold)",
            f"OOF R2: Y={self.r2_y:.3f}  T=[{', '.join(f'{v:.3f}' for v in self.r2_t)}]",
            f"overlap (T variance left): [{', '.join(f'{v:.3f}' for v in self.overlap)}] "
            f"(warn < {self.overlap_threshold})",
            f"ESS={self.ess:.0f} ({self.ess_share:.1%} of rows)  "
            f"final Gram condition={self.gram_condition:.3g}  cov={self.cov_type}",
        ]
        return "\n".join(lines + [f"WARNING: {w}" for w in self.warnings])


def _json_float(x: float) -> float | str:
    return x if np.isfinite(x) else ("inf" if x > 0 else "-inf")


def r2(y: np.ndarray, res: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted out-of-fold R^2 per column from targets and residuals (both (n, k))."""
    sw = w.sum()  # weighted column sums as matrix-vector products: much faster than axis-0 reductions
    mean = w @ y / sw
    tot = w @ (y - mean) ** 2 / sw
    sse = w @ res**2 / sw
    return 1.0 - sse / np.where(tot > 0, tot, np.nan)


def compute_diagnostics(Y, T, y_res, t_res, w, *, n_groups: int, fold_groups: list[int],
                        gram_condition: float, final_mse: float, cov_type: str,
                        overlap_threshold: float, condition_threshold: float = 1e8,
                        emit: bool = True, n_params: int = 0) -> FitDiagnostics:
    """Build :class:`FitDiagnostics` and raise a warning for each problem found."""
    r2_t = r2(T, t_res, w)
    info = w * (t_res**2 @ np.ones(t_res.shape[1]))
    ess = float(info.sum() ** 2 / max((info**2).sum(), 1e-300))
    diag = FitDiagnostics(
        n_rows=len(Y), n_groups=n_groups, n_folds=len(fold_groups),
        min_groups_per_fold=int(min(fold_groups)),
        r2_y=float(r2(Y[:, None], y_res[:, None], w)[0]),
        r2_t=[float(v) for v in r2_t], overlap=[float(1 - v) for v in r2_t],
        overlap_threshold=overlap_threshold, ess=ess, ess_share=ess / len(Y),
        gram_condition=float(gram_condition), final_mse=float(final_mse), cov_type=cov_type,
        n_params=int(n_params),
    )
    diag.warnings = _problems(diag, condition_threshold)
    if emit:
        for msg in diag.warnings:
            warnings.warn(msg, CausalDiagnosticWarning, stacklevel=3)
    return diag


def _problems(d: FitDiagnostics, condition_threshold: float) -> list[str]:
    out = []
    weak = [i for i, v in enumerate(d.overlap) if v < d.overlap_threshold]
    if weak:
        out.append(
            f"weak overlap in prompt-feature dims {weak}: less than {d.overlap_threshold:.0%} of "
            "their variance is left after predicting them from the query, so their effects are "
            "barely identified (log more diverse prompts per query, or reduce the prompt PCA size)"
        )
    if not np.isfinite(d.gram_condition) or d.gram_condition > condition_threshold:
        out.append(
            f"final stage is ill-conditioned (condition number {d.gram_condition:.3g}): use a "
            "simpler featurizer, fewer PCA components, or final_alpha > 0"
        )
    if d.n_params and min(d.n_groups, d.n_rows) <= d.n_params:
        unit = "query clusters" if d.cov_type == "cluster" else "rows"
        out.append(
            f"the final stage has {d.n_params} coefficients for {min(d.n_groups, d.n_rows)} {unit}: its standard "
            "errors cannot be estimated (they collapse toward 0, so every interval from this fit is far too "
            "narrow) and its effects extrapolate; use fewer PCA components (pca.query_components, "
            "pca.prompt_components), a simpler featurizer, or more queries"
        )
    if d.ess_share < 0.05:
        out.append(
            f"effective sample size is only {d.ess:.0f} rows ({d.ess_share:.1%}): a few rows "
            "carry the whole estimate; intervals may be unreliable"
        )
    if d.r2_y < -0.05:
        out.append(f"out-of-fold R^2 of E[Y|X] is {d.r2_y:.3f} < 0: the outcome nuisance "
                   "overfits; use a simpler or more regularized model_y")
    return out
