"""Final stage of linear DML: regress residual Y on ``phi(X) (x) residual T`` with robust covariance.

Column ``f * d_T + t`` of the design is ``phi_f(X) * T_res_t`` (the row-major ``vec(B)`` layout of
:class:`~cpo_engine.causal.head.LinearHead`). Gram matrix and scores are accumulated in chunks on the
model's device, so memory stays ``O(chunk * d_phi * d_T)`` however many rows there are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COV_TYPES = ("cluster", "HC1", "HC0", "nonrobust")
_CHUNK_ELEMS = 1 << 24
_CACHE_ELEMS = 1 << 26  # keep the design in memory between passes up to 512 MB (float64)


@dataclass(frozen=True)
class FinalFit:
    """Result of the final-stage regression.

    Attributes
    ----------
    coef : ndarray (d_phi, d_T)
        ``B`` in ``theta(X) = B^T phi(X)``.
    cov : ndarray (d_phi * d_T, d_phi * d_T)
        Covariance of ``vec(B)`` of the requested ``cov_type``.
    gram_condition : float
        Condition number of the column-normalized Gram matrix (large: effects poorly separated).
    mse : float
        Weighted mean squared final-stage residual.
    n_clusters : int
        Number of clusters used by the covariance (rows when no groups were given).
    """

    coef: np.ndarray
    cov: np.ndarray
    gram_condition: float
    mse: float
    n_clusters: int


def _design(phi, r):
    """Rows ``kron(phi_i, r_i)``, shape (n, d_phi * d_T)."""
    return (phi[:, :, None] * r[:, None, :]).reshape(len(phi), -1)


def _chunks(n: int, width: int):
    step = max(1, _CHUNK_ELEMS // max(width, 1))
    for i in range(0, n, step):
        yield slice(i, min(n, i + step))


def fit_final(phi: np.ndarray, t_res: np.ndarray, y_res: np.ndarray, *,
              groups: np.ndarray | None = None, sample_weight: np.ndarray | None = None,
              alpha: float = 0.0, cov_type: str = "cluster", device: str = "cpu") -> FinalFit:
    """Weighted least squares (ridge when ``alpha > 0``) of ``y_res`` on ``phi (x) t_res``.

    ``alpha`` shrinks the heterogeneity, i.e. the rows of ``B`` for the non-constant columns of
    ``phi`` (``phi[:, 0]`` must be the constant 1), toward the average effect, which is left
    unpenalized. The penalty is scale-free: column ``j`` gets ``alpha * G_jj`` added to the normal
    equations (``G`` the weighted mean Gram matrix), so ``alpha = 1`` doubles each diagonal.
    ``cov_type="cluster"`` uses the CR1 correction ``G/(G-1) (n-1)/(n-p)``; ``HC1`` scales HC0 by
    ``n/(n-p)`` (econml's LinearDML convention).
    """
    import torch

    if cov_type not in COV_TYPES:
        from cpo_engine.exceptions import ConfigError

        raise ConfigError(f"cov_type must be one of {COV_TYPES}, got {cov_type!r}")
    dev = torch.device(device)
    n, d_phi, d_t = len(phi), phi.shape[1], t_res.shape[1]
    p = d_phi * d_t
    w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, np.float64)
    P, R, Yr, W = (torch.as_tensor(np.asarray(a, np.float64), device=dev) for a in (phi, t_res, y_res, w))
    gram = torch.zeros(p, p, dtype=torch.float64, device=dev)
    rhs = torch.zeros(p, dtype=torch.float64, device=dev)
    cache: list | None = [] if n * p <= _CACHE_ELEMS else None  # reuse designs in the second pass
    for s in _chunks(n, p):
        F = _design(P[s], R[s])
        gram += (F * W[s, None]).T @ F
        rhs += F.T @ (W[s] * Yr[s])
        if cache is not None:
            cache.append(F)
    sw = float(W.sum())
    penalty = torch.full((p,), float(alpha), dtype=torch.float64, device=dev)
    penalty[:d_t] = 0.0  # the constant column of phi: the average effect is not shrunk
    bread_m = gram / sw + torch.diag(penalty * torch.diagonal(gram) / sw)
    beta = torch.linalg.solve(bread_m, rhs / sw)
    codes, n_clusters = _cluster_codes(groups, n, cov_type)
    meat, sse = _meat(P, R, Yr, W, beta, codes, n_clusters, cov_type, p, cache)
    bread = torch.linalg.inv(bread_m) / sw
    cov = _scale_cov(bread @ meat @ bread, cov_type, n, p, n_clusters, sse, sw, bread)
    return FinalFit(
        coef=beta.reshape(d_phi, d_t).cpu().numpy(),
        cov=cov.cpu().numpy(),
        gram_condition=_condition(gram),
        mse=sse / sw,
        n_clusters=n_clusters,
    )


def _cluster_codes(groups, n: int, cov_type: str):
    if cov_type == "cluster" and groups is not None:
        from cpo_engine.causal._checks import group_codes

        codes = group_codes(groups, n)
        return codes, int(codes.max()) + 1
    return None, n


def _meat(P, R, Yr, W, beta, codes, n_clusters: int, cov_type: str, p: int, cache: list | None = None):
    """Sum of outer products of score contributions (per row or per cluster) and the weighted SSE."""
    import torch

    dev = P.device
    meat = torch.zeros(p, p, dtype=torch.float64, device=dev)
    scores = None
    if codes is not None:
        scores = torch.zeros(n_clusters, p, dtype=torch.float64, device=dev)
        codes_t = torch.as_tensor(codes, device=dev)
    sse = 0.0
    for j, s in enumerate(_chunks(len(P), p)):
        F = cache[j] if cache is not None else _design(P[s], R[s])
        e = Yr[s] - F @ beta
        sse += float((W[s] * e * e).sum())
        contrib = F * (W[s] * e)[:, None]
        if scores is not None:
            scores.index_add_(0, codes_t[s], contrib)
        elif cov_type != "nonrobust":
            meat += contrib.T @ contrib
    if scores is not None:
        meat = scores.T @ scores
    return meat, sse


def _scale_cov(cov, cov_type: str, n: int, p: int, g: int, sse: float, sw: float, bread):
    dof = max(n - p, 1)
    if cov_type == "nonrobust":
        return bread * (sse / dof)
    if cov_type == "HC1":
        return cov * (n / dof)
    if cov_type == "cluster" and g > 1:
        return cov * (g / (g - 1)) * ((n - 1) / dof)
    return cov


def _condition(gram) -> float:
    import torch

    d = torch.sqrt(torch.clamp(torch.diagonal(gram), min=1e-300))
    eig = torch.linalg.eigvalsh(gram / d[:, None] / d[None, :])
    lo = float(eig.min())
    return float("inf") if lo <= 0 else float(eig.max() / lo)


ALPHA_GRID: tuple[float, ...] = (0.0, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 1e3, 1e4)


def select_alpha(phi: np.ndarray, t_res: np.ndarray, y_res: np.ndarray, folds: list, *,
                 sample_weight: np.ndarray | None = None, grid: tuple[float, ...] = ALPHA_GRID,
                 device: str = "cpu") -> tuple[float, list[float]]:
    """Choose the final-stage penalty by grouped cross-validation of the R-loss.

    For each held-out fold, the final stage is refit on the other folds' residuals and scored by
    the weighted mean squared residual on the held-out rows, all from per-fold Gram matrices.
    Returns the best penalty and the CV loss per grid value.
    """
    import torch

    dev = torch.device(device)
    n, d_t = len(phi), t_res.shape[1]
    p = phi.shape[1] * d_t
    w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, np.float64)
    stats = [_fold_stats(phi[te], t_res[te], y_res[te], w[te], dev) for _, te in folds]
    total = [sum(s[i] for s in stats) for i in range(4)]
    loss = np.zeros(len(grid))
    for g_f, r_f, yy_f, sw_f in stats:
        g_tr, r_tr, sw_tr = total[0] - g_f, total[1] - r_f, total[3] - sw_f
        for a, alpha in enumerate(grid):
            pen = torch.full((p,), float(alpha), dtype=torch.float64, device=dev)
            pen[:d_t] = 0.0
            A = g_tr / sw_tr + torch.diag(pen * torch.diagonal(g_tr) / sw_tr)
            b = torch.linalg.lstsq(A, (r_tr / sw_tr)[:, None]).solution[:, 0]
            loss[a] += float(yy_f - 2 * b @ r_f + b @ g_f @ b)
    loss /= float(total[3])
    return float(grid[int(np.argmin(loss))]), loss.tolist()


def _fold_stats(phi, r, y, w, dev):
    import torch

    F = torch.as_tensor(_design(phi, r), device=dev)
    W, Y = torch.as_tensor(w, device=dev), torch.as_tensor(y, device=dev)
    return (F * W[:, None]).T @ F, F.T @ (W * Y), float((W * Y * Y).sum()), float(W.sum())
