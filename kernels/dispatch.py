"""GPU kernels beside their torch references, behind one dispatch point: :func:`score_topk`.

``score_topk`` scores every (query, candidate) pair of a linear effect head,

    objective[q, c] = phi_q^T B (T_c - T_ref) - z * se[q, c] + bias[c],

and returns each query's k best candidates, without materializing the (n_q, n_c) matrix when it
would not fit the memory budget. Backends:

- ``"torch"``: :mod:`cpo_engine.kernels.score_topk_torch`, the reference; runs on CPU or CUDA.
- ``"triton"``: :mod:`cpo_engine.kernels.score_topk_triton`, a fused tile kernel; CUDA + Triton only, imported
  lazily here and nowhere else.
- ``"numba"``: :mod:`cpo_engine.kernels.score_topk_numba`, the CPU twin: computes a cheap bound for every pair
  and the exact objective only where the bound can reach a query's top-k (exact result, faster than
  a bare matmul of the same shape); CPU only, imported lazily here and nowhere else.
- ``"auto"``: Triton when the device is CUDA, the dtype float32 and Triton importable; Numba on the CPU
  for rounds of at least :data:`NUMBA_MIN_PAIRS` pairs (its first call in a process loads or compiles
  the kernel, a second or more); else torch.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .score_topk_torch import PackedHead, gather_pairs, pack, score_block, topk_chunked

_DEFAULT_CPU_BUDGET = 32 * 1024**2
QUERY_BLOCK = 1 << 18
"""Queries scored per pass of :func:`score_topk`: the packed query features (d_phi(d_phi+1)/2 floats a
query) are built a block at a time, so memory beyond the (n_queries, k) result stays bounded."""
NUMBA_MIN_PAIRS = 1 << 26
"""Smallest round (queries x candidates) that ``backend='auto'`` scores with Numba on the CPU: below it the
torch reference takes well under a second, less than the Numba kernel's one-time load."""
BACKENDS = ("auto", "torch", "triton", "numba")


@dataclass(frozen=True)
class TopK:
    """Per-query top-k result; every array has shape (n_queries, k).

    Attributes
    ----------
    values : ndarray
        The objective (effect - z*se + bias), descending; ``-inf`` where fewer than k candidates
        were allowed.
    indices : ndarray of int64
        Candidate indices; -1 where ``values`` is ``-inf``.
    effect, se : ndarray
        Predicted effect and its standard error at those pairs (NaN where the index is -1).
    backend : str
        The backend that ran ("torch", "numba" or "triton").
    """

    values: np.ndarray
    indices: np.ndarray
    effect: np.ndarray
    se: np.ndarray
    backend: str


def triton_available(device: str | torch.device) -> bool:
    """True when the Triton kernel can run on ``device``."""
    return torch.device(device).type == "cuda" and importlib.util.find_spec("triton") is not None


def numba_available(device: str | torch.device) -> bool:
    """True when the Numba kernel can run on ``device`` (the CPU)."""
    return torch.device(device).type == "cpu" and importlib.util.find_spec("numba") is not None


def choose_chunks(n_q: int, n_c: int, itemsize: int, budget_bytes: int) -> tuple[int, int]:
    """(chunk_q, chunk_c) so that the few live (chunk_q x chunk_c) blocks fit ``budget_bytes``."""
    if budget_bytes <= 0:
        raise ValueError(f"memory budget must be > 0 bytes, got {budget_bytes}")
    chunk_c = max(1, min(n_c, 8192))
    # objective, effect, variance and the top-k concat are alive at once: ~4 blocks
    chunk_q = max(1, min(n_q, budget_bytes // (4 * chunk_c * itemsize)))
    return int(chunk_q), int(chunk_c)


def default_budget(device: torch.device) -> int:
    """Bytes a scoring pass may hold: a quarter of free GPU memory, or 32 MiB on the CPU (blocks that
    stay in cache score faster than big ones)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free // 4)
    return _DEFAULT_CPU_BUDGET


def _as_tensor(a: Any, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.to(device=device, dtype=dtype)
    return torch.as_tensor(np.asarray(a), dtype=dtype, device=device)


def prepare(phi: Any, dt: Any, coef: Any, cov: Any, *, device: str = "cpu",
            dtype: torch.dtype = torch.float32) -> PackedHead:
    """Move inputs to ``device`` and fold the head with the candidates (see :func:`pack`)."""
    dev = torch.device(device)
    phi_t, dt_t = _as_tensor(phi, dev, dtype), _as_tensor(dt, dev, dtype)
    coef_t, cov_t = _as_tensor(coef, dev, dtype), _as_tensor(cov, dev, dtype)
    if phi_t.ndim != 2 or dt_t.ndim != 2:
        raise ValueError(f"phi and dt must be 2-D, got shapes {tuple(phi_t.shape)} and {tuple(dt_t.shape)}")
    if coef_t.shape != (phi_t.shape[1], dt_t.shape[1]):
        raise ValueError(f"coef must have shape (d_phi, d_T) = {(phi_t.shape[1], dt_t.shape[1])}, "
                         f"got {tuple(coef_t.shape)}")
    return pack(phi_t, dt_t, coef_t, cov_t)


def score_topk(phi: Any, dt: Any, coef: Any, cov: Any, k: int, *, z: float = 0.0, bias: Any = None,
               device: str = "auto", backend: str = "auto", dtype: torch.dtype = torch.float32,
               memory_budget_bytes: int | None = None) -> TopK:
    """Per-query top-k of ``phi^T B dt - z*se + bias`` over all candidates: the one dispatch point.

    Parameters
    ----------
    phi : array (n_q, d_phi)
        Featurized queries, ``LinearHead.featurize(X)``.
    dt : array (n_c, d_T)
        Candidates relative to the reference, ``T_c - LinearHead.t_ref``.
    coef, cov : arrays
        ``LinearHead.coef`` (d_phi, d_T) and ``LinearHead.cov`` (d_phi*d_T, d_phi*d_T).
    k : int
        How many candidates to keep per query.
    z : float
        Lower-confidence-bound multiplier; 0 ranks by the point estimate.
    bias : array (n_c,), optional
        Added to every query's objective (penalties are negative; ``-inf`` excludes a candidate).
    device, backend, dtype
        Where and how to run; see the module docstring.
    memory_budget_bytes : int, optional
        Cap on the live score blocks; default: :func:`default_budget`.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n_q = len(phi)
    if n_q > QUERY_BLOCK:
        backend = choose_backend(backend, _resolve(device), dtype, n_q * len(dt))  # one backend for every block
        parts = [score_topk(phi[q0:q0 + QUERY_BLOCK], dt, coef, cov, k, z=z, bias=bias, device=device, backend=backend,
                            dtype=dtype, memory_budget_bytes=memory_budget_bytes) for q0 in range(0, n_q, QUERY_BLOCK)]
        return TopK(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("values", "indices", "effect", "se")),
                    backend=parts[0].backend)
    dev = torch.device(_resolve(device))
    ph = prepare(phi, dt, coef, cov, device=str(dev), dtype=dtype)
    b = None if bias is None else _as_tensor(bias, dev, dtype)
    budget = memory_budget_bytes or default_budget(dev)
    chunk_q, chunk_c = choose_chunks(ph.phi.shape[0], ph.G.shape[1], ph.phi.element_size(), budget)
    name = choose_backend(backend, dev, dtype, ph.phi.shape[0] * ph.G.shape[1])
    if ph.G.shape[1] == 0:  # no candidates: every slot is empty
        n_q = ph.phi.shape[0]
        return TopK(values=np.full((n_q, k), -np.inf), indices=np.full((n_q, k), -1, dtype=np.int64),
                    effect=np.full((n_q, k), np.nan), se=np.full((n_q, k), np.nan), backend=name)
    with torch.no_grad():
        if name == "triton":
            from .score_topk_triton import topk_triton

            vals, idx = topk_triton(ph, k, z, b, chunk_c=max(chunk_c, budget // max(1, 8 * ph.phi.shape[0])))
        elif name == "numba":
            from .score_topk_numba import topk_numba

            vals, idx = topk_numba(ph, k, z, b)
        else:
            vals, idx = topk_chunked(ph, k, z, b, chunk_q, chunk_c)
        est, se = _gather(ph, idx)
    return TopK(values=vals.double().cpu().numpy(), indices=idx.cpu().numpy(), effect=est, se=se, backend=name)


def score_dense(phi: Any, dt: Any, coef: Any, cov: Any, *, device: str = "cpu",
                dtype: torch.dtype = torch.float64) -> tuple[np.ndarray, np.ndarray]:
    """Full (n_q, n_c) effect and se matrices: for small pools (pool mode, tests)."""
    ph = prepare(phi, dt, coef, cov, device=_resolve(device), dtype=dtype)
    with torch.no_grad():
        _, est, se = score_block(ph, slice(None), slice(None), 0.0, None)
    return est.double().cpu().numpy(), se.double().cpu().numpy()


def _gather(ph: PackedHead, idx: torch.Tensor, rows_per_step: int = 1 << 14) -> tuple[np.ndarray, np.ndarray]:
    """Effect and se at each query's kept candidates, a block of queries at a time: the gathered rows of
    P and W are (rows, k, d_phi(d_phi+1)/2) each, gigabytes for a million queries if taken at once."""
    n_q = idx.shape[0]
    est_np = np.empty(tuple(idx.shape), dtype=np.float64)
    se_np = np.empty(tuple(idx.shape), dtype=np.float64)
    for q0 in range(0, n_q, rows_per_step):
        block = idx[q0:q0 + rows_per_step]
        rows = torch.arange(q0, q0 + block.shape[0], device=idx.device)[:, None].expand_as(block)
        est, se = gather_pairs(ph, rows, block.clamp_min(0))
        est_np[q0:q0 + block.shape[0]] = est.double().cpu().numpy()
        se_np[q0:q0 + block.shape[0]] = se.double().cpu().numpy()
    missing = idx.cpu().numpy() < 0
    est_np[missing], se_np[missing] = np.nan, np.nan
    return est_np, se_np


def _resolve(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def choose_backend(backend: str, device: str | torch.device, dtype: torch.dtype, pairs: int) -> str:
    """The backend :func:`score_topk` runs for ``backend`` ('auto' resolved; see the module docstring) on
    ``device`` for a round of ``pairs`` (queries x candidates); an unavailable explicit choice raises."""
    device = torch.device(device)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got '{backend}'")
    if backend == "triton" and not triton_available(device):
        raise ValueError(f"backend='triton' needs a CUDA device and the triton package (device is {device}); "
                         "use backend='torch' or 'auto'")
    if backend == "numba" and not numba_available(device):
        raise ValueError(f"backend='numba' needs the CPU and the numba package (device is {device}); "
                         "use backend='torch' or 'auto'")
    if backend == "auto":
        if triton_available(device) and dtype == torch.float32:
            return "triton"
        if numba_available(device) and pairs >= NUMBA_MIN_PAIRS:
            return "numba"
        return "torch"
    return backend


__all__ = ["BACKENDS", "NUMBA_MIN_PAIRS", "QUERY_BLOCK", "TopK", "choose_backend", "choose_chunks", "default_budget", "numba_available",
           "prepare", "score_dense", "score_topk", "triton_available"]
