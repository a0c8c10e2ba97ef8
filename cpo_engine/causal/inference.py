"""Final stage of linear DML: regress residual Y on ``phi(X) (x) residual T`` with robust covariance.

Column ``f * d_T + t`` of the design is ``phi_f(X) * T_res_t`` (the row-major ``vec(B)`` layout of
:class:`~cpo_engine.causal.head.LinearHead`). Two paths give the same numbers:

- **clusters** (:mod:`cpo_engine.causal._final_stats`): when ``phi`` is constant within each cluster
  (CPO: one query, one ``X``) and the covariance is clustered or classical, everything is computed
  from per-cluster sufficient statistics in one pass over the rows, without the design matrix;
- **rows**: the design is built in chunks on the model's device (any ``phi``, any covariance), so
  memory stays ``O(chunk * d_phi * d_T)`` however many rows there are.

:func:`fit_final_stage` is what the estimator calls: the (optionally penalized) point estimate, the
unpenalized fit whose sandwich the intervals use (a sandwich around a shrunk estimate does not cover:
docs/causal.md, "Intervals"), and unpenalized fits on two disjoint halves of the clusters, which
honest selection uses (choose on one half, estimate the chosen prompt on the other).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cpo_engine.causal._final_stats import Block, ClusterStats, cluster_rows, group_moments

COV_TYPES = ("cluster", "HC1", "HC0", "nonrobust")
PATHS = ("auto", "clusters", "rows")
_CHUNK_ELEMS = 1 << 24
_CACHE_ELEMS = 1 << 26  # keep the design in memory between passes up to 512 MB (float64)
ALPHA_GRID: tuple[float, ...] = (0.0, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 1e3, 1e4)


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
    n_rows : int
        Rows fitted.
    """

    coef: np.ndarray
    cov: np.ndarray
    gram_condition: float
    mse: float
    n_clusters: int
    n_rows: int = 0


@dataclass(frozen=True)
class FinalStage:
    """Everything the estimator keeps from its final stage.

    Attributes
    ----------
    coef : ndarray (d_phi, d_T)
        Point estimate, shrunk by ``alpha`` (equal to ``inference.coef`` when ``alpha == 0``).
    alpha : float
        The penalty of ``coef`` (chosen by CV when asked).
    alpha_cv : dict or None
        ``{"grid", "loss", "chosen"}`` when the penalty was cross-validated.
    inference : FinalFit
        The unpenalized fit: the center and covariance of every interval and lower bound.
    halves : (FinalFit, FinalFit) or None
        Unpenalized fits on two disjoint, seeded halves of the clusters ("select", "estimate"); None
        when a half is too small to fit.
    path : str
        ``"clusters"`` or ``"rows"``.
    """

    coef: np.ndarray
    alpha: float
    alpha_cv: dict | None
    inference: FinalFit
    halves: tuple[FinalFit, FinalFit] | None
    path: str


@dataclass(frozen=True)
class ClusterPhi:
    """``phi`` given once per cluster: ``values`` (G, d_phi) for cluster codes 0..G-1 of ``groups``
    (the row of ``phi`` for row i is ``values[code_i]``). Lets callers that know ``X`` is constant
    within queries skip featurizing every row."""

    values: np.ndarray

    def rows(self, groups: np.ndarray) -> np.ndarray:
        from cpo_engine.causal._checks import group_codes

        return self.values[group_codes(groups, len(groups))]


def _check_cov_type(cov_type: str) -> None:
    if cov_type not in COV_TYPES:
        from cpo_engine.exceptions import ConfigError

        raise ConfigError(f"cov_type must be one of {COV_TYPES}, got {cov_type!r}")


def _weights(sample_weight, n: int) -> np.ndarray:
    return np.ones(n) if sample_weight is None else np.asarray(sample_weight, np.float64)


def fit_final(phi: np.ndarray, t_res: np.ndarray, y_res: np.ndarray, *,
              groups: np.ndarray | None = None, sample_weight: np.ndarray | None = None,
              alpha: float = 0.0, cov_type: str = "cluster", device: str = "cpu", path: str = "auto") -> FinalFit:
    """Weighted least squares (ridge when ``alpha > 0``) of ``y_res`` on ``phi (x) t_res``.

    ``alpha`` shrinks the heterogeneity, i.e. the rows of ``B`` for the non-constant columns of
    ``phi`` (``phi[:, 0]`` must be the constant 1), toward the average effect, which is left
    unpenalized. The penalty is scale-free: column ``j`` gets ``alpha * G_jj`` added to the normal
    equations (``G`` the weighted mean Gram matrix), so ``alpha = 1`` doubles each diagonal.
    ``cov_type="cluster"`` uses the CR1 correction ``G/(G-1) (n-1)/(n-p)``; ``HC1`` scales HC0 by
    ``n/(n-p)`` (econml's LinearDML convention). With ``alpha > 0`` the covariance is the sandwich
    around the shrunk estimate, which does not cover the truth (use the unpenalized fit for intervals).
    ``path`` forces the cluster-statistics or the row path (``"auto"``: clusters when possible).
    """
    _check_cov_type(cov_type)
    parts = _cluster_stats(phi, t_res, y_res, groups, sample_weight, cov_type, device, path)
    if parts is not None:
        stats = ClusterStats.from_moments(*parts, device=device)
        return _fit_block(stats, stats.block(), slice(None), float(alpha), cov_type)
    phi = phi.rows(groups) if isinstance(phi, ClusterPhi) else phi
    return _fit_rows(phi, t_res, y_res, groups=groups, sample_weight=sample_weight, alpha=alpha,
                     cov_type=cov_type, device=device)


def _cluster_stats(phi, t_res, y_res, groups, sample_weight, cov_type: str, device, path: str, moments=None):
    """Inputs of :class:`ClusterStats` (phi per cluster, residual moments, weights, rows) when the
    cluster path applies (and is allowed), else None."""
    if path not in PATHS:
        from cpo_engine.exceptions import ConfigError

        raise ConfigError(f"path must be one of {PATHS}, got {path!r}")
    if path == "rows" or groups is None or cov_type not in ("cluster", "nonrobust"):
        if path == "clusters":
            from cpo_engine.exceptions import ConfigError

            raise ConfigError("the cluster path needs groups and cov_type 'cluster' or 'nonrobust'")
        return None
    from cpo_engine.causal._checks import group_codes

    if isinstance(phi, ClusterPhi) and moments is not None:
        return (phi.values, *moments)
    n = len(y_res)
    codes = group_codes(groups, n)
    if isinstance(phi, ClusterPhi):
        phi_c = phi.values
    else:
        first = cluster_rows(np.asarray(phi, np.float64), codes, int(codes.max()) + 1)
        if first is None:
            if path == "clusters":
                from cpo_engine.exceptions import ConfigError

                raise ConfigError("the cluster path needs phi constant within each cluster")
            return None
        phi_c = np.asarray(phi, np.float64)[first]
    w, G = _weights(sample_weight, n), len(phi_c)
    M = group_moments(np.column_stack([y_res, t_res]), w, codes, G)
    return phi_c, M, np.bincount(codes, weights=w, minlength=G), np.bincount(codes, minlength=G)


# ---------------------------------------------------------------------- shared algebra
def _penalty(p: int, d_t: int, alpha: float, gram, sw: float):
    import torch

    pen = torch.full((p,), float(alpha), dtype=torch.float64, device=gram.device)
    pen[:d_t] = 0.0  # the constant column of phi: the average effect is not shrunk
    return torch.diag(pen * torch.diagonal(gram) / sw)


def _solve(gram, rhs, sw: float, alpha: float, d_t: int):
    """Penalized normal equations in mean scale; returns (beta, bread_m)."""
    import torch

    bread_m = gram / sw + _penalty(len(rhs), d_t, alpha, gram, sw)
    return torch.linalg.solve(bread_m, rhs / sw), bread_m


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


# ---------------------------------------------------------------------- cluster path
def _fit_block(stats: ClusterStats, blk: Block, sl: slice, alpha: float, cov_type: str,
               condition: bool = True) -> FinalFit:
    """Fit on the clusters at positions ``sl`` whose sums are ``blk``."""
    import torch

    p, d_t = stats.p, stats.d_t
    beta, bread_m = _solve(blk.gram, blk.rhs, blk.sw, alpha, d_t)
    v, sse = stats.scores(beta, sl)
    bread = torch.linalg.inv(bread_m) / blk.sw
    cov = bread if cov_type == "nonrobust" else bread @ stats.meat(v, sl) @ bread
    cov = _scale_cov(cov, cov_type, blk.n_rows, p, blk.n_clusters, sse, blk.sw, bread)
    return FinalFit(coef=beta.reshape(stats.d_phi, d_t).cpu().numpy(), cov=cov.cpu().numpy(),
                    gram_condition=_condition(blk.gram) if condition else float("nan"), mse=sse / blk.sw,
                    n_clusters=blk.n_clusters, n_rows=blk.n_rows)


def _cv_blocks(held: list[Block], total: Block, d_t: int, grid: tuple[float, ...]) -> tuple[float, list[float]]:
    """Grouped CV of the R-loss over ``grid`` from per-fold sums (one batched solve per fold)."""
    import torch

    loss = np.zeros(len(grid))
    p = len(total.rhs)
    for f in held:
        g_tr, r_tr, sw_tr = total.gram - f.gram, total.rhs - f.rhs, total.sw - f.sw
        A = torch.stack([g_tr / sw_tr + _penalty(p, d_t, a, g_tr, sw_tr) for a in grid])
        rhs = (r_tr / sw_tr).expand(len(grid), p)[:, :, None]
        b, info = torch.linalg.solve_ex(A, rhs)
        if bool((info != 0).any()):  # a singular unpenalized fold: least squares instead
            b = torch.linalg.lstsq(A, rhs).solution
        b = b[:, :, 0]
        loss += (f.yy - 2 * b @ f.rhs + ((b @ f.gram) * b).sum(1)).cpu().numpy()
    loss /= float(total.sw)
    return float(grid[int(np.argmin(loss))]), loss.tolist()


def _stage_clusters(parts: tuple, cluster_fold: np.ndarray, cluster_half: np.ndarray, alpha,
                    cov_type: str, halves: bool, device) -> FinalStage:
    n_folds = int(cluster_fold.max()) + 1
    label = cluster_half * n_folds + cluster_fold  # each half, and each (half, fold) part, contiguous
    order = np.argsort(label, kind="stable")
    phi_c, M, sw, n = parts
    stats = ClusterStats.from_moments(phi_c[order], M[order], sw[order], n[order], device=device)
    bounds = np.searchsorted(label[order], np.arange(2 * n_folds + 1))
    parts = [stats.block(slice(bounds[k], bounds[k + 1])) for k in range(2 * n_folds)]
    total = _sum(parts)
    alpha_cv = None
    if alpha == "cv":
        held = [parts[k] + parts[n_folds + k] for k in range(n_folds)]
        alpha, losses = _cv_blocks(held, total, stats.d_t, ALPHA_GRID)
        alpha_cv = {"grid": list(ALPHA_GRID), "loss": losses, "chosen": alpha}
    inference = _fit_block(stats, total, slice(None), 0.0, cov_type)
    coef = inference.coef if alpha == 0 else \
        _solve(total.gram, total.rhs, total.sw, float(alpha), stats.d_t)[0].reshape(stats.d_phi, -1).cpu().numpy()
    pair = None
    if halves:
        sls = [slice(bounds[0], bounds[n_folds]), slice(bounds[n_folds], bounds[2 * n_folds])]
        blocks = [_sum(parts[:n_folds]), _sum(parts[n_folds:])]
        if all(_fittable(b, stats.p) for b in blocks):
            pair = _try(lambda: tuple(_fit_block(stats, b, sl, 0.0, cov_type, condition=False)
                                      for b, sl in zip(blocks, sls)))
    return FinalStage(coef=coef, alpha=float(alpha), alpha_cv=alpha_cv, inference=inference, halves=pair,
                      path="clusters")


def _sum(blocks: list[Block]) -> Block:
    out = blocks[0]
    for b in blocks[1:]:
        out = out + b
    return out


def _fittable(blk: Block, p: int) -> bool:
    return blk.n_clusters >= 2 and blk.n_rows > p and blk.sw > 0


def _try(fn):
    """``fn()``, or None when a half's normal equations are singular."""
    import torch

    try:
        return fn()
    except (torch.linalg.LinAlgError, RuntimeError):
        return None


# ---------------------------------------------------------------------- row path
def _design(phi, r):
    """Rows ``kron(phi_i, r_i)``, shape (n, d_phi * d_T)."""
    return (phi[:, :, None] * r[:, None, :]).reshape(len(phi), -1)


def _chunks(n: int, width: int):
    step = max(1, _CHUNK_ELEMS // max(width, 1))
    for i in range(0, n, step):
        yield slice(i, min(n, i + step))


def _fit_rows(phi, t_res, y_res, *, groups, sample_weight, alpha, cov_type, device) -> FinalFit:
    import torch

    dev = torch.device(device)
    n, d_phi, d_t = len(phi), phi.shape[1], t_res.shape[1]
    p = d_phi * d_t
    w = _weights(sample_weight, n)
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
    beta, bread_m = _solve(gram, rhs, sw, float(alpha), d_t)
    codes, n_clusters = _cluster_codes(groups, n, cov_type)
    meat, sse = _meat(P, R, Yr, W, beta, codes, n_clusters, cov_type, p, cache)
    bread = torch.linalg.inv(bread_m) / sw
    cov = _scale_cov(bread @ meat @ bread, cov_type, n, p, n_clusters, sse, sw, bread)
    return FinalFit(coef=beta.reshape(d_phi, d_t).cpu().numpy(), cov=cov.cpu().numpy(),
                    gram_condition=_condition(gram), mse=sse / sw, n_clusters=n_clusters, n_rows=n)


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


def select_alpha(phi: np.ndarray, t_res: np.ndarray, y_res: np.ndarray, folds: list, *,
                 sample_weight: np.ndarray | None = None, grid: tuple[float, ...] = ALPHA_GRID,
                 device: str = "cpu") -> tuple[float, list[float]]:
    """Choose the final-stage penalty by grouped cross-validation of the R-loss (row path).

    For each held-out fold, the final stage is refit on the other folds' residuals and scored by
    the weighted mean squared residual on the held-out rows, all from per-fold Gram matrices.
    Returns the best penalty and the CV loss per grid value.
    """
    import torch

    dev = torch.device(device)
    w = _weights(sample_weight, len(phi))
    held = [_row_block(phi[te], t_res[te], y_res[te], w[te], dev) for _, te in folds]
    return _cv_blocks(held, _sum(held), t_res.shape[1], grid)


def _row_block(phi, r, y, w, dev) -> Block:
    import torch

    F = torch.as_tensor(_design(phi, r), device=dev)
    W, Y = torch.as_tensor(w, device=dev), torch.as_tensor(y, device=dev)
    return Block((F * W[:, None]).T @ F, F.T @ (W * Y), float((W * Y * Y).sum()), float(W.sum()), len(y), len(y))


def _stage_rows(phi, t_res, y_res, groups, w, alpha, cov_type, folds, row_half, device, halves) -> FinalStage:
    alpha_cv = None
    if alpha == "cv":
        alpha, losses = select_alpha(phi, t_res, y_res, folds, sample_weight=w, device=device)
        alpha_cv = {"grid": list(ALPHA_GRID), "loss": losses, "chosen": alpha}
    kw = {"cov_type": cov_type, "device": device}
    inference = _fit_rows(phi, t_res, y_res, groups=groups, sample_weight=w, alpha=0.0, **kw)
    coef = inference.coef if alpha == 0 else _fit_rows(phi, t_res, y_res, groups=groups, sample_weight=w,
                                                       alpha=alpha, **kw).coef
    pair = None
    if halves:
        masks = [row_half == h for h in (0, 1)]
        p = phi.shape[1] * t_res.shape[1]
        if all(m.sum() > p and (groups is None or len(np.unique(groups[m])) >= 2) for m in masks):
            pair = _try(lambda: tuple(_fit_rows(phi[m], t_res[m], y_res[m], groups=None if groups is None
                                                else groups[m], sample_weight=w[m], alpha=0.0, **kw)
                                      for m in masks))
    return FinalStage(coef=coef, alpha=float(alpha), alpha_cv=alpha_cv, inference=inference, halves=pair,
                      path="rows")


# ---------------------------------------------------------------------- the estimator's entry point
def split_halves(n_clusters: int, seed: int) -> np.ndarray:
    """Seeded assignment of clusters to two halves (0/1) of equal size (+-1), independent of the folds."""
    return np.random.default_rng((int(seed), 0x5E1EC7)).permutation(n_clusters) % 2


def fit_final_stage(phi: "np.ndarray | ClusterPhi", t_res: np.ndarray, y_res: np.ndarray, *, folds: list,
                    groups: np.ndarray | None = None, sample_weight: np.ndarray | None = None,
                    alpha: "float | str" = 0.0, cov_type: str = "cluster", split_seed: int = 0,
                    device: str = "cpu", path: str = "auto", halves: bool = True,
                    cluster_moments: tuple | None = None) -> FinalStage:
    """Point estimate (penalized by ``alpha``, or a CV choice for ``"cv"``), the unpenalized fit for
    inference, and unpenalized fits on two seeded halves of the clusters.

    ``folds`` are the cross-fitting folds (the penalty CV reuses them). Clusters are ``groups`` (rows
    when None); the halves split whole clusters. ``phi`` may be a :class:`ClusterPhi` (one row per
    cluster) when ``X`` is known to be constant within clusters; then ``cluster_moments`` (the
    residual moments per cluster, total weights and row counts from
    :meth:`~cpo_engine.causal._final_stats.QueryMoments.residual`) may replace a pass over the rows.
    """
    _check_cov_type(cov_type)
    from cpo_engine.causal._checks import group_codes

    n = len(y_res)
    w = _weights(sample_weight, n)
    codes = group_codes(groups, n)
    n_clusters = int(codes.max()) + 1
    cluster_half = split_halves(n_clusters, split_seed)
    stats = _cluster_stats(phi, t_res, y_res, groups, w, cov_type, device, path, cluster_moments)
    if stats is None:  # the row path
        phi = phi.rows(groups) if isinstance(phi, ClusterPhi) else phi
        return _stage_rows(phi, t_res, y_res, groups, w, alpha, cov_type, folds, cluster_half[codes], device, halves)
    fold_of_row = np.empty(n, dtype=np.int64)
    for k, (_, te) in enumerate(folds):
        fold_of_row[te] = k
    cluster_fold = np.zeros(n_clusters, dtype=np.int64)
    cluster_fold[codes] = fold_of_row
    return _stage_clusters(stats, cluster_fold, cluster_half, alpha, cov_type, halves, device)


__all__ = ["ALPHA_GRID", "COV_TYPES", "ClusterPhi", "FinalFit", "FinalStage", "fit_final", "fit_final_stage", "select_alpha",
           "split_halves"]
