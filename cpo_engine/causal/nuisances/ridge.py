"""``ridge``: multi-output ridge regression in closed form (torch, CUDA when present), with a penalty
cross-validated from per-fold sufficient statistics; the statistics also drive the one-pass
cross-fit of :func:`cpo_engine.causal._crossfit.ridge_crossfit`."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from cpo_engine.causal._folds import fold_ids
from cpo_engine.causal.nuisances._common import (
    TorchNuisance,
    as_2d,
    resolve_torch_device,
    saved_params,
    torch_module,
)

DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-6, 3, 19))


class TorchRidge(TorchNuisance):
    """Multi-output ridge regression in closed form, on CUDA when present.

    The penalty is chosen per output by K-fold cross-validation computed from per-fold sufficient
    statistics (``X^T W X``, ``X^T W y``, ...), so choosing among many penalties costs one pass over
    the data plus ``K * len(alphas)`` small ``d x d`` solves. Folds are grouped when ``groups`` is
    passed to :meth:`fit` (rows of one query are not independent: row-level CV would pick too small
    a penalty).

    Parameters
    ----------
    alpha : float, optional
        Fixed penalty (as in ``sklearn.linear_model.Ridge``). When None, it is cross-validated.
    alphas : sequence of float
        Candidate penalties, relative to the mean eigenvalue of the centered weighted Gram matrix
        (so the grid is scale-free).
    cv : int
        Number of CV folds for choosing the penalty.
    fit_intercept : bool
        Fit an unpenalized intercept.
    device : {"auto", "cpu", "cuda"}
        Where the arithmetic runs; "auto" picks CUDA when available.
    random_state : int
        Seed of the CV fold assignment.
    """

    def __init__(
        self,
        alpha: float | None = None,
        alphas: Sequence[float] = DEFAULT_ALPHAS,
        cv: int = 5,
        fit_intercept: bool = True,
        device: str = "auto",
        random_state: int = 0,
    ) -> None:
        self.alpha = alpha
        self.alphas = alphas
        self.cv = cv
        self.fit_intercept = fit_intercept
        self.device = device
        self.random_state = random_state

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        sample_weight: np.ndarray | None = None,
        groups: np.ndarray | None = None,
    ) -> "TorchRidge":
        """Fit on ``X`` (n, d) and ``y`` (n,) or (n, k); returns self."""
        torch = torch_module()
        dev = resolve_torch_device(self.device)
        X = np.asarray(X, dtype=np.float64)
        Y, self._y_1d = as_2d(y)
        w = np.ones(len(X)) if sample_weight is None else np.asarray(sample_weight, np.float64)
        shift = X.mean(0) if self.fit_intercept else np.zeros(X.shape[1])
        Xt = torch.as_tensor(X - shift, device=dev)
        Yt, wt = torch.as_tensor(Y, device=dev), torch.as_tensor(w, device=dev)
        total = suff_stats(Xt, Yt, wt)
        held = None
        if self.alpha is None:
            ids = torch.as_tensor(fold_ids(len(Xt), self.cv, groups, self.random_state), device=dev)
            held = []
            for f in range(self.cv):
                rows = torch.nonzero(ids == f).squeeze(1)
                held.append(suff_stats(Xt[rows], Yt[rows], wt[rows]))
        return self.fit_stats(total, held, shift)

    def fit_stats(self, total: dict, held: list[dict] | None, shift: np.ndarray) -> "TorchRidge":
        """Fit from sufficient statistics of rows shifted by ``shift``: ``total`` over the training
        rows and, when the penalty is cross-validated, ``held`` per CV fold; returns self."""
        torch = torch_module()
        k = total["sxy"].shape[1]
        alphas = np.full(k, float(self.alpha)) if self.alpha is not None else self._cv_alphas(total, held)
        coef, mx, my = _solve(total, torch.as_tensor(alphas, device=total["sxx"].device), self.fit_intercept)
        self.coef_ = coef.cpu().numpy()
        self.intercept_ = (my - mx @ coef).cpu().numpy() - shift @ self.coef_
        self.alpha_ = alphas
        self.n_features_in_ = int(total["sxx"].shape[0])
        if not hasattr(self, "_y_1d"):
            self._y_1d = False
        return self

    def _cv_alphas(self, total: dict, held: list[dict]) -> np.ndarray:
        torch = torch_module()
        _, cxx, _ = _centered(total, self.fit_intercept)
        scale = float(torch.linalg.eigvalsh(cxx).clamp_min(0).mean()) or 1.0
        dev, dtype = cxx.device, cxx.dtype
        grid = torch.as_tensor(np.asarray(self.alphas, np.float64) * scale, device=dev)
        err = torch.zeros(len(grid), total["sxy"].shape[1], dtype=dtype, device=dev)
        for h in held:
            if float(h["sw"]) == 0.0:
                continue
            train = {key: total[key] - h[key] for key in total}
            err += _heldout_sse(train, h, grid, self.fit_intercept)
        return grid[err.argmin(0)].cpu().numpy()

    def columns(self, cols: slice, y_1d: bool) -> "TorchRidge":
        """A fitted copy restricted to output columns ``cols`` (for jointly fitted targets)."""
        part = type(self)(**self.get_params())
        part.coef_, part.intercept_ = self.coef_[:, cols], self.intercept_[cols]
        part.alpha_, part.n_features_in_, part._y_1d = self.alpha_[cols], self.n_features_in_, y_1d
        return part

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions of shape (n,) or (n, k), matching the ``y`` passed to fit."""
        out = np.asarray(X, dtype=np.float64) @ self.coef_ + self.intercept_
        return out[:, 0] if self._y_1d else out

    # ------------------------------------------------------------------ persistence
    def state_arrays(self) -> dict[str, np.ndarray]:
        """The fitted arrays: coefficients (d, k), intercepts (k,) and chosen penalties (k,)."""
        return {"coef": self.coef_, "intercept": self.intercept_, "alpha": np.asarray(self.alpha_, np.float64)}

    def meta(self) -> dict[str, Any]:
        """JSON-safe settings: target shape and constructor parameters."""
        return {"y_1d": bool(self._y_1d), "params": saved_params(self)}

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> "TorchRidge":
        """A fitted ridge on the CPU from :meth:`meta` and :meth:`state_arrays` (older saves hold
        neither ``params`` nor ``alpha``: defaults and NaN)."""
        params = dict(meta.get("params", {}))
        if params.get("alphas") is not None:
            params["alphas"] = tuple(params["alphas"])
        m = cls(**params | {"device": "cpu"})
        m.coef_, m.intercept_ = np.asarray(arrays["coef"]), np.asarray(arrays["intercept"])
        m.alpha_ = np.asarray(arrays.get("alpha", np.full(m.coef_.shape[1], np.nan)))
        m.n_features_in_, m._y_1d = int(m.coef_.shape[0]), bool(meta["y_1d"])
        return m


def suff_stats(X: Any, Y: Any, w: Any) -> dict:
    """Weighted sufficient statistics of (X, Y): sums of w, wX, wY, wXX^T, wXY^T, wY^2 (torch)."""
    Xw = X * w[:, None]
    return {
        "sw": w.sum(), "sx": Xw.sum(0), "sy": (Y * w[:, None]).sum(0),
        "sxx": Xw.T @ X, "sxy": Xw.T @ Y, "syy": (Y * Y * w[:, None]).sum(0),
    }


def _centered(s: dict, intercept: bool):
    if not intercept:
        return s["sx"] * 0, s["sxx"], s["sxy"]
    mx, my = s["sx"] / s["sw"], s["sy"] / s["sw"]
    cxx = s["sxx"] - s["sw"] * mx[:, None] * mx[None, :]
    cxy = s["sxy"] - s["sw"] * mx[:, None] * my[None, :]
    return mx, cxx, cxy


def _solve(s: dict, alphas, intercept: bool):
    """Per-output ridge solution from sufficient statistics; returns (coef (d,k), mean_x, mean_y)."""
    torch = torch_module()
    _, cxx, cxy = _centered(s, intercept)
    lam, V = torch.linalg.eigh(cxx)
    q = V.T @ cxy  # (d, k)
    coef = V @ (q / (lam[:, None] + alphas[None, :]))
    mx = s["sx"] / s["sw"] if intercept else s["sx"] * 0
    my = s["sy"] / s["sw"] if intercept else s["sy"] * 0
    return coef, mx, my


def _heldout_sse(train: dict, held: dict, grid, intercept: bool):
    """Weighted SSE on the held-out fold for every (alpha, output), from statistics alone."""
    torch = torch_module()
    mx, cxx, cxy = _centered(train, intercept)
    my = train["sy"] / train["sw"] if intercept else train["sy"] * 0
    lam, V = torch.linalg.eigh(cxx)
    q = V.T @ cxy  # (d, k)
    # held-out moments around the training means
    hxx = held["sxx"] - mx[:, None] * held["sx"][None, :] - held["sx"][:, None] * mx[None, :]
    hxx = hxx + held["sw"] * mx[:, None] * mx[None, :]
    hxy = held["sxy"] - mx[:, None] * held["sy"][None, :] - held["sx"][:, None] * my[None, :]
    hxy = hxy + held["sw"] * mx[:, None] * my[None, :]
    hyy = held["syy"] - 2 * my * held["sy"] + held["sw"] * my * my
    c = V @ (q[None] / (lam[None, :, None] + grid[:, None, None]))  # (alphas, d, k), all penalties at once
    return hyy - 2 * (c * hxy).sum(1) + (c * (hxx @ c)).sum(1)


__all__ = ["DEFAULT_ALPHAS", "TorchRidge", "suff_stats"]
