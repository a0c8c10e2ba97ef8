"""Nuisance regressors for DML: ``E[Y|X]`` and ``E[T|X]``.

Two torch models that run unchanged on CUDA or the CPU (:class:`TorchRidge`, closed form with a
cross-validated penalty; :class:`TorchMLP`), any scikit-learn regressor, and cuML's ridge as an
optional GPU twin of :class:`TorchRidge` (imported lazily). All follow the scikit-learn estimator API
(``get_params``/``fit``/``predict``), so :func:`sklearn.base.clone` and econml accept them too.
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, clone

DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-6, 3, 19))
NUISANCE_NAMES = ("ridge", "mlp", "hgb", "lgbm", "cuml_ridge")


def _torch():
    import torch

    return torch


def _device(device: str) -> Any:
    torch = _torch()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but CUDA is not available: use device='auto'")
    return torch.device(device)


def _as_2d(y: np.ndarray) -> tuple[np.ndarray, bool]:
    y = np.asarray(y, dtype=np.float64)
    return (y[:, None], True) if y.ndim == 1 else (y, False)


def fold_ids(n: int, n_folds: int, groups: np.ndarray | None, seed: int) -> np.ndarray:
    """Assign rows to ``n_folds`` folds; all rows of a group share a fold when groups are given.

    With integer groups the fold is a seeded hash of the group id alone, so a group lands in the same
    fold whichever subset of rows is being fitted (the stats-based cross-fit relies on this).
    """
    if groups is None:
        return np.random.default_rng(seed).permutation(n) % n_folds
    g = np.asarray(groups)
    if g.dtype.kind not in "iu":
        from cpo_engine.causal._checks import group_codes

        g = group_codes(g, n)
    return (_splitmix64(g.astype(np.uint64), seed) % np.uint64(n_folds)).astype(np.int64)


def _splitmix64(x: np.ndarray, seed: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + np.uint64(seed + 1) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


class TorchRidge(RegressorMixin, BaseEstimator):
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
        torch = _torch()
        dev = _device(self.device)
        X = np.asarray(X, dtype=np.float64)
        Y, self._y_1d = _as_2d(y)
        w = np.ones(len(X)) if sample_weight is None else np.asarray(sample_weight, np.float64)
        shift = X.mean(0) if self.fit_intercept else np.zeros(X.shape[1])
        Xt = torch.as_tensor(X - shift, device=dev)
        Yt, wt = torch.as_tensor(Y, device=dev), torch.as_tensor(w, device=dev)
        total = _suff_stats(Xt, Yt, wt)
        held = None
        if self.alpha is None:
            ids = torch.as_tensor(fold_ids(len(Xt), self.cv, groups, self.random_state), device=dev)
            held = []
            for f in range(self.cv):
                rows = torch.nonzero(ids == f).squeeze(1)
                held.append(_suff_stats(Xt[rows], Yt[rows], wt[rows]))
        return self.fit_stats(total, held, shift)

    def fit_stats(self, total: dict, held: list[dict] | None, shift: np.ndarray) -> "TorchRidge":
        """Fit from sufficient statistics of rows shifted by ``shift``: ``total`` over the training
        rows and, when the penalty is cross-validated, ``held`` per CV fold; returns self."""
        torch = _torch()
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
        torch = _torch()
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
        part = TorchRidge(**self.get_params())
        part.coef_, part.intercept_ = self.coef_[:, cols], self.intercept_[cols]
        part.alpha_, part.n_features_in_, part._y_1d = self.alpha_[cols], self.n_features_in_, y_1d
        return part

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions of shape (n,) or (n, k), matching the ``y`` passed to fit."""
        out = np.asarray(X, dtype=np.float64) @ self.coef_ + self.intercept_
        return out[:, 0] if self._y_1d else out


def _suff_stats(X, Y, w) -> dict:
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
    torch = _torch()
    _, cxx, cxy = _centered(s, intercept)
    lam, V = torch.linalg.eigh(cxx)
    q = V.T @ cxy  # (d, k)
    coef = V @ (q / (lam[:, None] + alphas[None, :]))
    mx = s["sx"] / s["sw"] if intercept else s["sx"] * 0
    my = s["sy"] / s["sw"] if intercept else s["sy"] * 0
    return coef, mx, my


def _heldout_sse(train: dict, held: dict, grid, intercept: bool):
    """Weighted SSE on the held-out fold for every (alpha, output), from statistics alone."""
    torch = _torch()
    mx, cxx, cxy = _centered(train, intercept)
    my = train["sy"] / train["sw"] if intercept else train["sy"] * 0
    lam, V = torch.linalg.eigh(cxx)
    q = V.T @ cxy  # (d, k)
    # held-out moments around the training means
    hx = held["sx"] - held["sw"] * mx
    hxx = held["sxx"] - mx[:, None] * held["sx"][None, :] - held["sx"][:, None] * mx[None, :]
    hxx = hxx + held["sw"] * mx[:, None] * mx[None, :]
    hxy = held["sxy"] - mx[:, None] * held["sy"][None, :] - held["sx"][:, None] * my[None, :]
    hxy = hxy + held["sw"] * mx[:, None] * my[None, :]
    hyy = held["syy"] - 2 * my * held["sy"] + held["sw"] * my * my
    del hx
    out = []
    for a in grid:
        c = V @ (q / (lam[:, None] + a))  # (d, k)
        out.append(hyy - 2 * (c * hxy).sum(0) + (c * (hxx @ c)).sum(0))
    return torch.stack(out)


class TorchMLP(RegressorMixin, BaseEstimator):
    """A small multi-output MLP regressor (ReLU, Adam, early stopping), on CUDA when present.

    Inputs and targets are standardized; 10% of the groups (or rows) are held out for early stopping.

    Parameters
    ----------
    hidden : tuple of int
        Hidden layer widths.
    max_epochs : int
        Upper bound on passes over the training data.
    batch_size : int
        Largest minibatch; smaller data sets use ``n / 16`` (at least 32) so every epoch takes
        at least 16 optimizer steps.
    lr : float
        Adam learning rate.
    weight_decay : float
        L2 penalty (AdamW).
    patience : int
        Epochs without validation improvement before stopping.
    device : {"auto", "cpu", "cuda"}
        Where training runs.
    random_state : int
        Seed for initialization, batching and the validation split.
    """

    def __init__(
        self,
        hidden: tuple[int, ...] = (64,),
        max_epochs: int = 60,
        batch_size: int = 2048,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        patience: int = 5,
        device: str = "auto",
        random_state: int = 0,
    ) -> None:
        self.hidden = hidden
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.patience = patience
        self.device = device
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> "TorchMLP":
        """Fit on ``X`` (n, d) and ``y`` (n,) or (n, k); returns self."""
        torch = _torch()
        dev = _device(self.device)
        gen = torch.Generator().manual_seed(self.random_state)
        X = np.asarray(X, dtype=np.float64)
        Y, self._y_1d = _as_2d(y)
        self.x_mean_, self.x_std_ = X.mean(0), X.std(0) + 1e-8
        self.y_mean_, self.y_std_ = Y.mean(0), Y.std(0) + 1e-8
        Xs = torch.as_tensor((X - self.x_mean_) / self.x_std_, dtype=torch.float32, device=dev)
        Ys = torch.as_tensor((Y - self.y_mean_) / self.y_std_, dtype=torch.float32, device=dev)
        val = torch.as_tensor(fold_ids(len(X), 10, groups, self.random_state) == 0, device=dev)
        torch.manual_seed(self.random_state)
        self.net_ = _mlp(X.shape[1], self.hidden, Y.shape[1]).to(dev)
        self._train(Xs[~val], Ys[~val], Xs[val], Ys[val], gen)
        self.n_features_in_ = X.shape[1]
        return self

    def _train(self, Xtr, Ytr, Xva, Yva, gen) -> None:
        torch = _torch()
        opt = torch.optim.AdamW(self.net_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        best, best_state, stale = float("inf"), None, 0
        bs = int(min(self.batch_size, max(32, len(Xtr) // 16)))
        for _ in range(self.max_epochs):
            perm = torch.randperm(len(Xtr), generator=gen).to(Xtr.device)
            for i in range(0, len(Xtr), bs):
                idx = perm[i : i + bs]
                opt.zero_grad()
                torch.nn.functional.mse_loss(self.net_(Xtr[idx]), Ytr[idx]).backward()
                opt.step()
            with torch.no_grad():
                loss = float(torch.nn.functional.mse_loss(self.net_(Xva), Yva)) if len(Xva) else 0.0
            if loss < best - 1e-5:
                best, stale = loss, 0
                best_state = {k: v.detach().clone() for k, v in self.net_.state_dict().items()}
            else:
                stale += 1
                if stale >= self.patience:
                    break
        if best_state is not None:
            self.net_.load_state_dict(best_state)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions of shape (n,) or (n, k), matching the ``y`` passed to fit."""
        torch = _torch()
        dev = next(self.net_.parameters()).device
        Xs = torch.as_tensor((np.asarray(X, np.float64) - self.x_mean_) / self.x_std_,
                             dtype=torch.float32, device=dev)
        with torch.no_grad():
            out = self.net_(Xs).double().cpu().numpy() * self.y_std_ + self.y_mean_
        return out[:, 0] if self._y_1d else out


def _mlp(d_in: int, hidden: tuple[int, ...], d_out: int):
    torch = _torch()
    layers: list = []
    for h in hidden:
        layers += [torch.nn.Linear(d_in, h), torch.nn.ReLU()]
        d_in = h
    layers.append(torch.nn.Linear(d_in, d_out))
    return torch.nn.Sequential(*layers)


def make_nuisance(spec: Any, random_state: int = 0, device: str = "auto") -> Any:
    """Build a fresh nuisance regressor from a name or clone a given estimator.

    Parameters
    ----------
    spec : str or estimator
        One of ``ridge`` (:class:`TorchRidge`), ``mlp`` (:class:`TorchMLP`), ``hgb``
        (scikit-learn HistGradientBoosting), ``lgbm`` (LightGBM), ``cuml_ridge`` (cuML twin of a
        fixed-penalty ridge; needs the ``cuml`` extra), or any object with ``fit``/``predict``.
    """
    if not isinstance(spec, str):
        if not (hasattr(spec, "fit") and hasattr(spec, "predict")):
            raise ValueError(f"a nuisance model needs fit() and predict(), got {type(spec).__name__}")
        return clone(spec)
    if spec == "ridge":
        return TorchRidge(device=device, random_state=random_state)
    if spec == "mlp":
        return TorchMLP(device=device, random_state=random_state)
    if spec == "hgb":
        from sklearn.ensemble import HistGradientBoostingRegressor

        return HistGradientBoostingRegressor(max_iter=200, random_state=random_state)
    if spec == "lgbm":
        from cpo_engine.utils import require

        lightgbm = require("lightgbm", extra="lightgbm")

        return lightgbm.LGBMRegressor(n_estimators=200, random_state=random_state, verbose=-1)
    if spec == "cuml_ridge":
        return make_cuml_ridge()
    raise ValueError(f"unknown nuisance {spec!r}: use one of {NUISANCE_NAMES} or an estimator")


def make_cuml_ridge(alpha: float = 1.0) -> Any:
    """cuML ``Ridge`` (GPU), the twin of ``TorchRidge(alpha=alpha)``; needs the ``cuml`` extra."""
    from cpo_engine.utils import require

    cuml = require("cuml", extra="cuml")
    return cuml.linear_model.Ridge(alpha=alpha, fit_intercept=True)


def supports_multi_output(model: Any) -> bool:
    """Whether ``model.fit`` accepts a 2-D target (the torch models and most linear models do)."""
    if isinstance(model, (TorchRidge, TorchMLP)):
        return True
    try:
        from sklearn.utils import get_tags

        return bool(get_tags(model).target_tags.multi_output)
    except Exception:  # non-sklearn object without tags: assume it copes, it fails loudly if not
        return True


def fit_nuisance(model: Any, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None,
                 sample_weight: np.ndarray | None = None) -> Any:
    """Fit ``model`` on (X, y), wrapping single-output models for multi-output targets.

    ``groups`` goes to ``fit`` when its signature takes it (grouped CV inside the torch models).
    """
    if np.ndim(y) == 2 and not supports_multi_output(model):
        from sklearn.multioutput import MultiOutputRegressor

        model = MultiOutputRegressor(model)
    params = inspect.signature(model.fit).parameters
    kwargs: dict[str, Any] = {}
    if groups is not None and "groups" in params:
        kwargs["groups"] = groups
    if sample_weight is not None:
        if "sample_weight" not in params:
            raise ValueError(f"{type(model).__name__}.fit does not take sample_weight")
        kwargs["sample_weight"] = sample_weight
    return model.fit(X, y, **kwargs)
