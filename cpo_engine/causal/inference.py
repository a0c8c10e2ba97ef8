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

    ``alpha`` penalizes ``||vec(B)||^2`` against the weighted *mean* squared residual, so it is
    independent of n. ``cov_type="cluster"`` uses the CR1 correction ``G/(G-1) (n-1)/(n-p)``;
    ``HC1`` scales HC0 by ``n/(n-p)`` (econml's and statsmodels' convention).
    """
    import torch

    if cov_type not in COV_TYPES:
        raise ValueError(f"cov_type must be one of {COV_TYPES}, got {cov_type!r}")
    dev = torch.device(device)
    n, d_phi, d_t = len(phi), phi.shape[1], t_res.shape[1]
    p = d_phi * d_t
    w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, np.float64)
    P, R, Yr, W = (torch.as_tensor(np.asarray(a, np.float64), device=dev) for a in (phi, t_res, y_res, w))
    gram = torch.zeros(p, p, dtype=torch.float64, device=dev)
    rhs = torch.zeros(p, dtype=torch.float64, device=dev)
    for s in _chunks(n, p):
        F = _design(P[s], R[s])
        gram += (F * W[s, None]).T @ F
        rhs += F.T @ (W[s] * Yr[s])
    sw = float(W.sum())
    bread_m = gram / sw + alpha * torch.eye(p, dtype=torch.float64, device=dev)
    beta = torch.linalg.solve(bread_m, rhs / sw)
    codes, n_clusters = _cluster_codes(groups, n, cov_type)
    meat, sse = _meat(P, R, Yr, W, beta, codes, n_clusters, cov_type, p)
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
        _, codes = np.unique(np.asarray(groups), return_inverse=True)
        return codes, int(codes.max()) + 1
    return None, n


def _meat(P, R, Yr, W, beta, codes, n_clusters: int, cov_type: str, p: int):
    """Sum of outer products of score contributions (per row or per cluster) and the weighted SSE."""
    import torch

    dev = P.device
    meat = torch.zeros(p, p, dtype=torch.float64, device=dev)
    scores = None
    if codes is not None:
        scores = torch.zeros(n_clusters, p, dtype=torch.float64, device=dev)
        codes_t = torch.as_tensor(codes, device=dev)
    sse = 0.0
    for s in _chunks(len(P), p):
        F = _design(P[s], R[s])
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
