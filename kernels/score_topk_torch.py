"""Pure-torch reference of the fused score + per-query top-k kernel; it serves the CPU.

For a linear effect head (see :class:`cpo_engine.causal.head.LinearHead`) the objective of candidate
``c`` for query ``q`` is

    s[q, c] = est[q, c] - z * se[q, c] + bias[c]
    est[q, c] = phi_q^T B dt_c                      = (phi @ G)[q, c],   G = B dt^T
    se[q, c]^2 = v^T cov v, v = vec(phi_q dt_c^T)    = (P @ W)[q, c]

where ``P[q]`` is the packed upper triangle of ``phi_q phi_q^T`` (off-diagonals doubled) and
``W[:, c]`` the packed upper triangle of ``W_c = sum_{t,s} dt[c,t] cov[., t, ., s] dt[c,s]``. Both
terms are matrix products, so scoring runs at matmul speed; the full (n_q, n_c) matrix is never
held at once: queries and candidates are walked in chunks whose size follows a memory budget and a
running top-k per query is merged chunk by chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_NEG_INF = float("-inf")


@dataclass(frozen=True)
class PackedHead:
    """The head folded with a candidate batch: everything the inner loop multiplies.

    Attributes
    ----------
    phi : Tensor (n_q, d_phi)
        Query features phi(X).
    P : Tensor (n_q, d_pp)
        Packed upper triangle of phi_q phi_q^T, off-diagonal entries doubled, d_pp = d_phi(d_phi+1)/2.
    G : Tensor (d_phi, n_c)
        B dt^T: the effect of each candidate per query feature.
    W : Tensor (d_pp, n_c)
        Packed upper triangle of each candidate's quadratic form of the coefficient covariance.
    """

    phi: torch.Tensor
    P: torch.Tensor
    G: torch.Tensor
    W: torch.Tensor


def _triu(d: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    iu = torch.triu_indices(d, d, device=device)
    scale = torch.where(iu[0] == iu[1], 1.0, 2.0).to(device)
    return iu[0], iu[1], scale


def pack_queries(phi: torch.Tensor) -> torch.Tensor:
    """(n_q, d_phi) -> (n_q, d_pp): packed outer products, off-diagonals doubled."""
    i, j, scale = _triu(phi.shape[1], phi.device)
    return phi[:, i] * phi[:, j] * scale.to(phi.dtype)


def pack_candidates(dt: torch.Tensor, coef: torch.Tensor, cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold candidates ``dt = T_c - T_ref`` (n_c, d_T) with the head: returns ``G`` and ``W``.

    Costs O(n_c d_T^2 d_phi^2) as one matmul, independent of the number of queries.
    """
    d_phi, d_t = coef.shape
    G = coef @ dt.T
    cov4 = cov.reshape(d_phi, d_t, d_phi, d_t)
    # m[c, f, g, s] = sum_t dt[c, t] cov4[f, t, g, s]
    m = (dt @ cov4.permute(1, 0, 2, 3).reshape(d_t, -1)).reshape(-1, d_phi, d_phi, d_t)
    w = torch.einsum("cfgs,cs->cfg", m, dt)
    i, j, _ = _triu(d_phi, dt.device)
    return G, w[:, i, j].T.contiguous()


def pack(phi: torch.Tensor, dt: torch.Tensor, coef: torch.Tensor, cov: torch.Tensor) -> PackedHead:
    """Build the :class:`PackedHead` for queries ``phi`` and candidates ``dt``."""
    G, W = pack_candidates(dt, coef, cov)
    return PackedHead(phi=phi, P=pack_queries(phi), G=G, W=W)


def score_block(ph: PackedHead, q: slice, c: slice, z: float,
                bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Objective, effect and standard error for a block of queries x candidates."""
    est = ph.phi[q] @ ph.G[:, c]
    se = (ph.P[q] @ ph.W[:, c]).clamp_min_(0.0).sqrt_()
    obj = est - z * se if z else est.clone()
    if bias is not None:
        obj += bias[c]
    return obj, est, se


def objective_block(ph: PackedHead, q: slice, c: slice, z: float, bias: torch.Tensor | None) -> torch.Tensor:
    """Only the objective of a block, computed in place (the top-k path: no effect/se kept)."""
    obj = ph.phi[q] @ ph.G[:, c]
    if z:
        var = ph.P[q] @ ph.W[:, c]
        obj.sub_(var.clamp_min_(0.0).sqrt_(), alpha=z)
    if bias is not None:
        obj += bias[c]
    return obj


def gather_pairs(ph: PackedHead, rows: torch.Tensor, cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Effect and standard error at given (query, candidate) pairs, same-shaped index tensors."""
    est = (ph.phi[rows] * ph.G.T[cols]).sum(-1)
    var = (ph.P[rows] * ph.W.T[cols]).sum(-1)
    return est, var.clamp_min(0.0).sqrt()


def topk_chunked(ph: PackedHead, k: int, z: float, bias: torch.Tensor | None,
                 chunk_q: int, chunk_c: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-query top-k of the objective, walking (chunk_q x chunk_c) blocks with a running merge.

    Masked candidates carry ``bias = -inf``; a query with fewer than k finite candidates gets
    ``-inf`` values with index -1 in the tail.
    """
    n_q, n_c = ph.phi.shape[0], ph.G.shape[1]
    k_eff = min(k, n_c)
    vals = torch.empty((n_q, k), dtype=ph.phi.dtype, device=ph.phi.device)
    idx = torch.empty((n_q, k), dtype=torch.long, device=ph.phi.device)
    for q0 in range(0, n_q, chunk_q):
        q = slice(q0, min(q0 + chunk_q, n_q))
        best_v = torch.full((q.stop - q0, 0), _NEG_INF, dtype=vals.dtype, device=vals.device)
        best_i = torch.empty((q.stop - q0, 0), dtype=torch.long, device=vals.device)
        for c0 in range(0, n_c, chunk_c):
            c = slice(c0, min(c0 + chunk_c, n_c))
            obj = objective_block(ph, q, c, z, bias)
            kk = min(k_eff, obj.shape[1])
            v, i = torch.topk(obj, kk, dim=1)
            best_v, sel = torch.topk(torch.cat([best_v, v], 1), min(k_eff, best_v.shape[1] + kk), dim=1)
            best_i = torch.gather(torch.cat([best_i, i + c0], 1), 1, sel)
        vals[q], idx[q] = _pad(best_v, best_i, k)
    idx[~torch.isfinite(vals)] = -1
    return vals, idx


def _pad(v: torch.Tensor, i: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    if v.shape[1] == k:
        return v, i
    pad = k - v.shape[1]
    return (torch.cat([v, v.new_full((v.shape[0], pad), _NEG_INF)], 1),
            torch.cat([i, i.new_full((i.shape[0], pad), -1)], 1))


__all__ = ["PackedHead", "pack", "pack_queries", "pack_candidates", "score_block", "objective_block", "gather_pairs", "topk_chunked"]
