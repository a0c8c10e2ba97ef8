"""Triton kernel: fused (effect - z*se + bias) scoring with a per-tile top-k, CUDA only.

Imported lazily by :mod:`kernels` when the tensors live on a CUDA device and Triton is installed.
:mod:`cpo_engine.kernels.score_topk_torch` is its specification; ``tests/test_kernels.py::test_triton_parity``
pins one to the other on a GPU.

Each program owns a (BLOCK_Q x BLOCK_C) tile: it computes ``phi @ G`` and ``P @ W`` in registers
(two small-K dot products), forms the objective, and reduces the tile to its K best candidates per
query by K rounds of max/argmax. Only ``n_q x ceil(n_c / BLOCK_C) x K`` partial results reach
global memory; a final ``torch.topk`` over them gives the per-query top-k. The score matrix itself
is never written.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .score_topk_torch import PackedHead


@triton.jit
def _score_topk_tile(
    phi_ptr, p_ptr, g_ptr, w_ptr, bias_ptr, out_v_ptr, out_i_ptr,
    n_q, n_c, d_phi, d_pp, n_cblk, z,
    HAS_BIAS: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_C: tl.constexpr,
    BLOCK_F: tl.constexpr, BLOCK_P: tl.constexpr, K: tl.constexpr,
):
    pid_q = tl.program_id(0)
    pid_c = tl.program_id(1)
    rq = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    rc = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    qm = rq < n_q
    cm = rc < n_c
    est = tl.zeros((BLOCK_Q, BLOCK_C), dtype=tl.float32)
    for f0 in range(0, d_phi, BLOCK_F):
        rf = f0 + tl.arange(0, BLOCK_F)
        a = tl.load(phi_ptr + rq[:, None] * d_phi + rf[None, :], mask=qm[:, None] & (rf[None, :] < d_phi), other=0.0)
        b = tl.load(g_ptr + rf[:, None] * n_c + rc[None, :], mask=(rf[:, None] < d_phi) & cm[None, :], other=0.0)
        est += tl.dot(a, b, input_precision="ieee")
    var = tl.zeros((BLOCK_Q, BLOCK_C), dtype=tl.float32)
    for p0 in range(0, d_pp, BLOCK_P):
        rp = p0 + tl.arange(0, BLOCK_P)
        a = tl.load(p_ptr + rq[:, None] * d_pp + rp[None, :], mask=qm[:, None] & (rp[None, :] < d_pp), other=0.0)
        b = tl.load(w_ptr + rp[:, None] * n_c + rc[None, :], mask=(rp[:, None] < d_pp) & cm[None, :], other=0.0)
        var += tl.dot(a, b, input_precision="ieee")
    obj = est - z * tl.sqrt(tl.maximum(var, 0.0))
    if HAS_BIAS:
        obj += tl.load(bias_ptr + rc, mask=cm, other=float("-inf"))[None, :]
    obj = tl.where(cm[None, :], obj, float("-inf"))
    cols = rc[None, :] + tl.zeros((BLOCK_Q, BLOCK_C), dtype=tl.int32)
    base = (rq * n_cblk + pid_c) * K
    for j in tl.static_range(K):
        best = tl.max(obj, axis=1)
        # the first column holding the maximum: ties resolve to the lowest index, like a stable sort
        arg = tl.min(tl.where(obj == best[:, None], cols, 2147483647), axis=1)
        tl.store(out_v_ptr + base + j, best, mask=qm)
        tl.store(out_i_ptr + base + j, arg, mask=qm)
        obj = tl.where(cols == arg[:, None], float("-inf"), obj)


def _pow2(n: int, lo: int = 16) -> int:
    return max(lo, 1 << (max(n, 1) - 1).bit_length())


def topk_triton(ph: PackedHead, k: int, z: float, bias: torch.Tensor | None,
                chunk_c: int, block_q: int = 64, block_c: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-query top-k through the Triton tile kernel; candidates are walked in chunks of chunk_c.

    Same contract as :func:`cpo_engine.kernels.score_topk_torch.topk_chunked` (float32 tensors on CUDA).
    """
    n_q, d_phi = ph.phi.shape
    n_c, d_pp = ph.G.shape[1], ph.P.shape[1]
    kk = min(k, block_c)
    best_v = torch.full((n_q, 0), float("-inf"), device=ph.phi.device, dtype=torch.float32)
    best_i = torch.empty((n_q, 0), device=ph.phi.device, dtype=torch.long)
    phi, P = ph.phi.float().contiguous(), ph.P.float().contiguous()
    for c0 in range(0, n_c, chunk_c):
        c1 = min(c0 + chunk_c, n_c)
        G, W = ph.G[:, c0:c1].float().contiguous(), ph.W[:, c0:c1].float().contiguous()
        b = bias[c0:c1].float().contiguous() if bias is not None else G
        n_cblk = triton.cdiv(c1 - c0, block_c)
        out_v = torch.empty((n_q, n_cblk, kk), device=phi.device, dtype=torch.float32)
        out_i = torch.empty((n_q, n_cblk, kk), device=phi.device, dtype=torch.int32)
        grid = (triton.cdiv(n_q, block_q), n_cblk)
        _score_topk_tile[grid](phi, P, G, W, b, out_v, out_i, n_q, c1 - c0, d_phi, d_pp, n_cblk, float(z),
                               HAS_BIAS=bias is not None, BLOCK_Q=block_q, BLOCK_C=block_c,
                               BLOCK_F=min(_pow2(d_phi), 32), BLOCK_P=32, K=kk)
        v = torch.cat([best_v, out_v.reshape(n_q, -1)], 1)
        i = torch.cat([best_i, out_i.reshape(n_q, -1).long() + c0], 1)
        best_v, sel = torch.topk(v, min(k, v.shape[1]), dim=1)
        best_i = torch.gather(i, 1, sel)
    if best_v.shape[1] < k:
        pad = k - best_v.shape[1]
        best_v = torch.cat([best_v, best_v.new_full((n_q, pad), float("-inf"))], 1)
        best_i = torch.cat([best_i, best_i.new_full((n_q, pad), -1)], 1)
    best_i[~torch.isfinite(best_v)] = -1
    return best_v, best_i


__all__ = ["topk_triton"]
