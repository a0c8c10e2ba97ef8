"""The final stage from per-cluster sufficient statistics, without the ``phi (x) T`` design matrix.

In CPO the query features (and so ``phi``) are the same on every row of a query, and the covariance
is clustered by query. Then every final-stage quantity is a sum over queries of small blocks:

    Gram  = sum_q (phi_q phi_q^T) (x) R_q,      R_q = sum_{i in q} w_i r_i r_i^T       (r = T residual)
    rhs   = sum_q  phi_q (x) u_q,               u_q = sum_{i in q} w_i y_i r_i         (y = Y residual)
    score_q = phi_q (x) (u_q - R_q theta_q),    theta_q = B^T phi_q                    (cluster score)
    SSE   = sum_q yy_q - 2 theta_q . u_q + theta_q^T R_q theta_q

so one pass over the rows builds ``(R_q, u_q, yy_q)`` (``O(n d_T^2)``) and everything after it costs
``O(G d_phi^2 d_T^2)`` for G queries, with Gram and meat as one matrix product of the packed upper
triangles of ``phi_q phi_q^T`` and ``R_q`` (or ``v_q v_q^T``). Fits on any union of queries (folds,
halves) are sums of per-part blocks, so the penalty CV, the unpenalized fit and the split-half fits
share that one pass. :func:`cpo_engine.causal.inference.fit_final` uses this path when ``phi`` is
constant within clusters and the covariance is clustered (or classical); it equals the row path
(tested to float rounding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

_ROW_CHUNK = 1 << 16


def _pack_index(d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Upper-triangle index pairs of a d x d matrix and the (d, d) map back to packed positions."""
    i, j = np.triu_indices(d)
    back = np.empty((d, d), dtype=np.int64)
    back[i, j] = np.arange(len(i))
    back[j, i] = np.arange(len(i))
    return i, j, back


@dataclass
class Block:
    """Sums over a set of clusters: Gram (p, p), rhs (p,), sum of w y^2, sum of w, rows, clusters."""

    gram: Any
    rhs: Any
    yy: float
    sw: float
    n_rows: int
    n_clusters: int

    def __add__(self, other: "Block") -> "Block":
        return Block(self.gram + other.gram, self.rhs + other.rhs, self.yy + other.yy, self.sw + other.sw,
                     self.n_rows + other.n_rows, self.n_clusters + other.n_clusters)


class ClusterStats:
    """Per-cluster sufficient statistics of the final stage (tensors on one device).

    Attributes
    ----------
    phi : (G, d_phi)   features of each cluster
    R : (G, d_T, d_T)  ``sum w r r^T``
    u : (G, d_T)       ``sum w y r``
    yy, sw : (G,)      ``sum w y^2`` and ``sum w``
    n : (G,) int       rows per cluster

    Sums over clusters take a ``slice`` of cluster positions (views, no copies): build the statistics
    with the clusters ordered so that every set you sum over is contiguous.
    """

    def __init__(self, phi, R, u, yy, sw, n) -> None:
        self.phi, self.R, self.u, self.yy, self.sw, self.n = phi, R, u, yy, sw, n
        self.d_phi, self.d_t = int(phi.shape[1]), int(R.shape[1])
        self._ip, self._jp, back_phi = _pack_index(self.d_phi)
        self._it, self._jt, back_t = _pack_index(self.d_t)
        torch = _torch()
        dev = phi.device
        # gram[(f,t),(g,s)] = M[back_phi[f,g], back_t[t,s]]
        self._rows = torch.as_tensor(back_phi[:, None, :, None], device=dev)
        self._cols = torch.as_tensor(back_t[None, :, None, :], device=dev)
        self._P = _packed_outer(phi, self._ip, self._jp)
        self._Rp = R.reshape(len(R), -1).index_select(1, torch.as_tensor(self._it * self.d_t + self._jt, device=dev))

    @property
    def p(self) -> int:
        return self.d_phi * self.d_t

    @classmethod
    def from_moments(cls, phi_c: np.ndarray, M: np.ndarray, sw: np.ndarray, n: np.ndarray,
                     device: Any = "cpu") -> "ClusterStats":
        """From per-cluster moments ``M[g] = sum w z z^T`` of ``z = (y residual, T residual)``."""
        torch = _torch()
        t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float64, device=device)  # noqa: E731
        return cls(t(phi_c), t(M[:, 1:, 1:]), t(M[:, 1:, 0]), t(M[:, 0, 0]), t(sw), torch.as_tensor(n, device=device))

    # ------------------------------------------------------------------ sums over clusters
    def _unpack(self, M):
        p = self.p
        return M[self._rows, self._cols].reshape(p, p)

    def block(self, sl: slice = slice(None)) -> Block:
        """Sums over the clusters at positions ``sl``."""
        P, Rp = self._P[sl], self._Rp[sl]
        gram = self._unpack(P.T @ Rp)
        rhs = (self.phi[sl].T @ self.u[sl]).reshape(-1)
        return Block(gram, rhs, float(self.yy[sl].sum()), float(self.sw[sl].sum()), int(self.n[sl].sum()),
                     int(P.shape[0]))

    def scores(self, coef, sl: slice = slice(None)):
        """``v_q = u_q - R_q theta_q`` per cluster (the cluster score is ``phi_q (x) v_q``) and the SSE."""
        theta = self.phi[sl] @ coef.reshape(self.d_phi, self.d_t)
        Rt = (self.R[sl] @ theta[:, :, None])[:, :, 0]
        u = self.u[sl]
        sse = float(self.yy[sl].sum() - 2 * (theta * u).sum() + (theta * Rt).sum())
        return u - Rt, sse

    def meat(self, v, sl: slice = slice(None)):
        """``sum_q (phi_q phi_q^T) (x) (v_q v_q^T)``: the clustered meat from per-cluster ``v``."""
        return self._unpack(self._P[sl].T @ _packed_outer(v, self._it, self._jt))


@dataclass
class QueryMoments:
    """Per-query moments ``M[g] = sum_{i in g} w_i z_i z_i^T`` of ``z = (1, Y - c_Y, T - c_T)`` (centered
    by the global means ``center`` to keep the residual moments exact), built once per fit. The
    ridge cross-fit reads its per-query sums from them and, once the nuisances have predicted each
    query, the final stage's residual moments follow without another pass over the rows.
    """

    M: np.ndarray
    center: np.ndarray
    n: np.ndarray

    @classmethod
    def build(cls, Y: np.ndarray, T: np.ndarray, w: np.ndarray, codes: np.ndarray, n_clusters: int) -> "QueryMoments":
        center = np.concatenate([[Y.mean()], T.mean(0)])
        Z = np.empty((len(Y), 2 + T.shape[1]))
        Z[:, 0], Z[:, 1], Z[:, 2:] = 1.0, Y - center[0], T - center[1:]
        return cls(group_moments(Z, w, codes, n_clusters), center, np.bincount(codes, minlength=n_clusters))

    def sums(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per query: total weight, ``sum w (Y, T)``, and ``sum w (Y - c, T - c)^2``."""
        M = self.M
        sw = M[:, 0, 0]
        return sw, M[:, 0, 1:] + sw[:, None] * self.center, np.diagonal(M, axis1=1, axis2=2)[:, 1:].copy()

    def residual(self, pg: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray]:
        """Moments of ``(Y, T)`` minus per-query predictions ``pg`` (G, 1 + d_T), per query."""
        p = pg - self.center  # residual = z[1:] - p * z[0]
        M = self.M
        s0, s1 = M[:, 0, 0], M[:, 0, 1:]
        ps = p[:, :, None] * s1[:, None, :]
        res = M[:, 1:, 1:] - ps - ps.transpose(0, 2, 1)
        res += (s0[:, None] * p)[:, :, None] * p[:, None, :]
        return res, s0, self.n


def _packed_outer(a, i: np.ndarray, j: np.ndarray):
    """Rows of the packed upper triangle of ``a_g a_g^T``: (G, d(d+1)/2)."""
    torch = _torch()
    d = a.shape[1]  # row r of the triangle is a_r * a[r:], in np.triu_indices order
    return torch.cat([a[:, r:r + 1] * a[:, r:] for r in range(d)], dim=1)


def cluster_rows(A: np.ndarray, codes: np.ndarray, n_clusters: int) -> np.ndarray | None:
    """Index of the first row of each cluster when the rows of ``A`` are identical within every cluster
    (so ``A[first]`` holds all of ``A``), else None."""
    first = np.empty(n_clusters, dtype=np.int64)
    first[codes[::-1]] = np.arange(len(codes) - 1, -1, -1)  # the last write wins: the first row
    ref = A[first]
    scale = max(float(np.abs(ref).max(initial=0.0)), 1.0)
    for s in range(0, len(codes), _ROW_CHUNK):
        sl = slice(s, s + _ROW_CHUNK)
        if np.abs(A[sl] - ref[codes[sl]]).max(initial=0.0) > 1e-12 * scale:
            return None
    return first


def group_moments(Z: np.ndarray, w: np.ndarray, codes: np.ndarray, n_clusters: int) -> np.ndarray:
    """``M[g] = sum_{i in g} w_i z_i z_i^T`` for every cluster: a (G, k, k) float64 array.

    Rows are ordered by cluster, then clusters of similar size (up to the next power of two, padded
    with a zero row) are multiplied as one batch: one stacked matrix product per size class
    instead of an (n, k^2) array of outer products. Sorted clusters of one size need no copy. (numpy:
    its stacked matmul is faster than torch's bmm on these tiny matrices.)
    """
    n, k = Z.shape
    sizes = np.bincount(codes, minlength=n_clusters)
    sorted_ = n < 2 or bool(np.all(codes[1:] >= codes[:-1]))
    if n_clusters and sorted_ and sizes.min() == sizes.max():
        Zg = np.asarray(Z, dtype=np.float64).reshape(n_clusters, -1, k)
        return np.matmul((Zg * w.reshape(n_clusters, -1, 1)).transpose(0, 2, 1), Zg)
    order = None if sorted_ else np.argsort(codes, kind="stable")
    Zs = np.asarray(Z if order is None else Z[order], dtype=np.float64)
    ws = w if order is None else w[order]
    pad = np.zeros((1, k))
    Zp, Zw = np.vstack([Zs, pad]), np.vstack([Zs * ws[:, None], pad])
    starts = np.cumsum(sizes) - sizes
    size_class = np.ceil(np.log2(np.maximum(sizes, 1))).astype(np.int64)
    M = np.zeros((n_clusters, k, k))
    for c in np.unique(size_class):
        gs = np.flatnonzero(size_class == c)
        width = int(sizes[gs].max())
        j = np.arange(width)
        pos = np.where(j[None, :] < sizes[gs][:, None], starts[gs][:, None] + j[None, :], n)
        M[gs] = np.matmul(Zw[pos].transpose(0, 2, 1), Zp[pos])
    return M


def _torch():
    import torch

    return torch


__all__ = ["Block", "ClusterStats", "QueryMoments", "cluster_rows", "group_moments"]
