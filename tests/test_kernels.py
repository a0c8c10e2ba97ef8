"""kernels.score_topk: the torch reference against the dense LinearHead spec, chunking, masking, Triton parity."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cpo_engine.kernels import dispatch as kernels
from cpo_engine.causal.head import LinearHead


def _head(d_x: int = 3, d_t: int = 4, seed: int = 0) -> LinearHead:
    rng = np.random.default_rng(seed)
    d_phi = d_x + 1
    a = rng.normal(size=(d_phi * d_t, d_phi * d_t)) * 0.05
    return LinearHead(coef=rng.normal(size=(d_phi, d_t)), cov=a @ a.T,
                      featurize=lambda X: np.hstack([np.ones((len(X), 1)), X]), t_ref=rng.normal(size=d_t))


def _problem(n_q: int, n_c: int, seed: int = 0) -> tuple[LinearHead, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed + 1)
    head = _head(seed=seed)
    return head, rng.normal(size=(n_q, 3)), rng.normal(size=(n_c, 4))


def _dense_topk(obj: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.argsort(-obj, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(obj, idx, 1), idx


@pytest.mark.parametrize("z", [0.0, 1.5])
def test_reference_matches_dense_head(z: float) -> None:
    head, X, T = _problem(37, 53)
    est, se = head.effect(X, T)
    bias = np.random.default_rng(5).normal(size=53) * 0.1
    top = kernels.score_topk(head.featurize(X), T - head.t_ref, head.coef, head.cov, 5, z=z, bias=bias,
                             device="cpu", dtype=torch.float64)
    vals, idx = _dense_topk(est - z * se + bias, 5)
    np.testing.assert_array_equal(top.indices, idx)
    np.testing.assert_allclose(top.values, vals, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(top.effect, np.take_along_axis(est, idx, 1), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(top.se, np.take_along_axis(se, idx, 1), rtol=1e-7, atol=1e-9)
    assert top.backend == "torch"


def test_score_dense_matches_head() -> None:
    head, X, T = _problem(11, 7)
    est, se = kernels.score_dense(head.featurize(X), T - head.t_ref, head.coef, head.cov)
    ref_est, ref_se = head.effect(X, T)
    np.testing.assert_allclose(est, ref_est, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(se, ref_se, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("budget", [4096, 64 * 1024, 1 << 30])
def test_chunking_gives_the_same_topk(budget: int) -> None:
    head, X, T = _problem(120, 300, seed=3)
    args = (head.featurize(X), T - head.t_ref, head.coef, head.cov, 4)
    small = kernels.score_topk(*args, z=1.0, device="cpu", dtype=torch.float64, memory_budget_bytes=budget)
    full = kernels.score_topk(*args, z=1.0, device="cpu", dtype=torch.float64, memory_budget_bytes=1 << 34)
    np.testing.assert_array_equal(small.indices, full.indices)
    np.testing.assert_allclose(small.values, full.values, rtol=1e-12)


def test_choose_chunks_respects_budget() -> None:
    cq, cc = kernels.choose_chunks(10_000, 10_000, 4, 64 * 1024**2)
    assert 4 * cq * cc * 4 <= 64 * 1024**2
    assert cc == 8192 and cq >= 1
    with pytest.raises(ValueError, match="budget"):
        kernels.choose_chunks(10, 10, 4, 0)


def test_excluded_candidates_never_selected_and_padding() -> None:
    head, X, T = _problem(9, 6)
    bias = np.array([0.0, -np.inf, 0.0, -np.inf, -np.inf, -np.inf])
    top = kernels.score_topk(head.featurize(X), T - head.t_ref, head.coef, head.cov, 4, bias=bias, device="cpu")
    assert set(np.unique(top.indices[:, :2])) <= {0, 2}
    assert (top.indices[:, 2:] == -1).all() and np.isneginf(top.values[:, 2:]).all()
    assert np.isnan(top.effect[:, 2:]).all()


def test_empty_inputs() -> None:
    head, X, T = _problem(3, 0)
    top = kernels.score_topk(head.featurize(X), T.reshape(0, 4), head.coef, head.cov, 2, device="cpu")
    assert (top.indices == -1).all() and top.values.shape == (3, 2)
    head, X, T = _problem(0, 5)
    assert kernels.score_topk(head.featurize(X), T - head.t_ref, head.coef, head.cov, 2, device="cpu").indices.shape \
        == (0, 2)


def test_float32_default_close_to_float64() -> None:
    head, X, T = _problem(50, 80, seed=7)
    args = (head.featurize(X), T - head.t_ref, head.coef, head.cov, 3)
    f32 = kernels.score_topk(*args, z=1.0, device="cpu")
    f64 = kernels.score_topk(*args, z=1.0, device="cpu", dtype=torch.float64)
    np.testing.assert_allclose(f32.values, f64.values, rtol=1e-4, atol=1e-4)


def test_bad_arguments_raise_clear_errors() -> None:
    head, X, T = _problem(4, 5)
    with pytest.raises(ValueError, match="k must be"):
        kernels.score_topk(head.featurize(X), T - head.t_ref, head.coef, head.cov, 0, device="cpu")
    with pytest.raises(ValueError, match="coef must have shape"):
        kernels.score_topk(head.featurize(X), T[:, :3], head.coef, head.cov, 1, device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="triton"):
            kernels.score_topk(head.featurize(X), T - head.t_ref, head.coef, head.cov, 1, device="cpu",
                               backend="triton")


@pytest.mark.gpu
@pytest.mark.skipif(not kernels.triton_available("cuda") or not torch.cuda.is_available(),
                    reason="needs a CUDA device and triton")
@pytest.mark.parametrize("n_q,n_c,k", [(1, 1, 1), (300, 1000, 8), (1000, 5000, 16), (257, 129, 200)])
def test_triton_parity(n_q: int, n_c: int, k: int) -> None:
    head, X, T = _problem(n_q, n_c, seed=11)
    bias = np.where(np.random.default_rng(2).random(n_c) < 0.1, -np.inf, 0.0)
    args = (head.featurize(X), T - head.t_ref, head.coef, head.cov, k)
    tri = kernels.score_topk(*args, z=1.0, bias=bias, device="cuda", backend="triton")
    ref = kernels.score_topk(*args, z=1.0, bias=bias, device="cuda", backend="torch")
    assert tri.backend == "triton"
    np.testing.assert_allclose(tri.values, ref.values, rtol=1e-4, atol=1e-5)
    agree = np.mean([len(set(a) & set(b)) / k for a, b in zip(tri.indices, ref.indices)])
    assert agree > 0.99  # float32 near-ties may swap places


_INTERPRET_SCRIPT = """
import torch
from cpo_engine.kernels.score_topk_torch import pack, topk_chunked
from cpo_engine.kernels.score_topk_triton import topk_triton
g = torch.Generator().manual_seed(0)
for nq, nc, k, z, masked in [(1, 1, 1, 0.0, False), (70, 300, 8, 1.0, True), (33, 129, 200, 1.5, False)]:
    a = torch.randn(20, 20, generator=g) * 0.05
    ph = pack(torch.cat([torch.ones(nq, 1), torch.randn(nq, 4, generator=g)], 1), torch.randn(nc, 4, generator=g),
              torch.randn(5, 4, generator=g), a @ a.T)
    bias = torch.where(torch.rand(nc, generator=g) < 0.2, float("-inf"), 0.0) if masked else None
    v1, i1 = topk_triton(ph, k, z, bias, chunk_c=256)
    v0, i0 = topk_chunked(ph, k, z, bias, 64, 128)
    fin = torch.isfinite(v0)
    assert torch.equal(fin, torch.isfinite(v1)), (nq, nc, k)
    assert torch.allclose(torch.where(fin, v1, 0), torch.where(fin, v0, 0), rtol=1e-4, atol=1e-5), (nq, nc, k)
    assert (i1 == i0).float().mean() > 0.99
print("ok")
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs the triton package")
def test_triton_kernel_in_interpreter_matches_reference() -> None:
    """Runs the Triton kernel on the CPU through Triton's interpreter (TRITON_INTERPRET=1)."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", _INTERPRET_SCRIPT], env=env, capture_output=True, text=True,
                         timeout=240)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


needs_numba = pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="needs the numba package")


@needs_numba
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n_q,n_c,k,z,masked", [(1, 1, 1, 0.0, False), (70, 300, 8, 1.0, True),
                                                  (33, 129, 200, 1.5, False), (257, 2000, 5, 3.0, True),
                                                  (40, 500, 3, 0.0, True)])
def test_numba_matches_torch_reference(n_q: int, n_c: int, k: int, z: float, masked: bool, dtype: torch.dtype) -> None:
    """The pruned Numba kernel returns the reference's top-k: same candidates, same objectives."""
    head, X, T = _problem(n_q, n_c, seed=n_q)
    bias = np.where(np.random.default_rng(n_c).random(n_c) < 0.3, -np.inf, 0.0) if masked else None
    args = (head.featurize(X), T - head.t_ref, head.coef, head.cov, k)
    nb = kernels.score_topk(*args, z=z, bias=bias, device="cpu", backend="numba", dtype=dtype)
    ref = kernels.score_topk(*args, z=z, bias=bias, device="cpu", backend="torch", dtype=dtype)
    assert nb.backend == "numba"
    np.testing.assert_array_equal(np.isfinite(nb.values), np.isfinite(ref.values))
    fin = np.isfinite(ref.values)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    np.testing.assert_allclose(nb.values[fin], ref.values[fin], rtol=tol, atol=tol)
    np.testing.assert_array_equal(nb.indices[~fin], -1)
    agree = np.mean([len(set(a[a >= 0]) & set(b[b >= 0])) / max(1, (b >= 0).sum()) for a, b in zip(nb.indices, ref.indices)])
    assert agree > 0.99 if dtype == torch.float32 else agree == 1.0


@needs_numba
def test_numba_exact_on_a_fitted_like_head_with_chunks() -> None:
    """Large z (se dominates) and several candidate chunks: still the dense float64 top-k."""
    from cpo_engine.kernels.score_topk_numba import topk_numba
    from cpo_engine.kernels.score_topk_torch import pack

    head, X, T = _problem(150, 3000, seed=21)
    est, se = head.effect(X, T)
    obj = est - 4.0 * se
    ph = pack(*(torch.as_tensor(a, dtype=torch.float64) for a in
                (head.featurize(X), T - head.t_ref, head.coef, head.cov)))
    vals, idx = topk_numba(ph, 6, 4.0, None, chunk_c=700)
    ref_v, ref_i = _dense_topk(obj, 6)
    np.testing.assert_array_equal(idx.numpy(), ref_i)
    np.testing.assert_allclose(vals.numpy(), ref_v, rtol=1e-10, atol=1e-12)


@needs_numba
def test_candidate_bounds_are_lower_bounds_of_se() -> None:
    """sqrt(lambda_min(W_c)) |phi_q| never exceeds se[q, c] (what makes skipping a pair safe)."""
    from cpo_engine.kernels.score_topk_numba import candidate_bounds
    from cpo_engine.kernels.score_topk_torch import pack

    head, X, T = _problem(60, 400, seed=5)
    ph = pack(*(torch.as_tensor(a, dtype=torch.float64) for a in
                (head.featurize(X), T - head.t_ref, head.coef, head.cov)))
    _, se = head.effect(X, T)
    lb = ph.phi.norm(dim=1).numpy()[:, None] * candidate_bounds(ph.W, ph.phi.shape[1]).numpy()[None, :]
    assert (lb <= se * (1 + 1e-9) + 1e-12).all()
    assert (lb > 0).mean() > 0.5  # not a trivial bound


def test_auto_backend_picks_numba_only_for_big_cpu_rounds(monkeypatch) -> None:
    head, X, T = _problem(20, 30)
    args = (head.featurize(X), T - head.t_ref, head.coef, head.cov, 2)
    assert kernels.score_topk(*args, device="cpu").backend == "torch"
    if importlib.util.find_spec("numba") is not None:
        monkeypatch.setattr(kernels, "NUMBA_MIN_PAIRS", 100)
        assert kernels.score_topk(*args, device="cpu").backend == "numba"
    with pytest.raises(ValueError, match="backend must be one of"):
        kernels.score_topk(*args, device="cpu", backend="cuda")


def test_query_blocks_give_the_same_result(monkeypatch) -> None:
    """Queries are scored a block at a time (bounded memory); the result is the one-pass result."""
    head, X, T = _problem(50, 40, seed=9)
    args = (head.featurize(X), T - head.t_ref, head.coef, head.cov, 3)
    whole = kernels.score_topk(*args, z=1.0, device="cpu", dtype=torch.float64)
    monkeypatch.setattr(kernels, "QUERY_BLOCK", 7)
    blocks = kernels.score_topk(*args, z=1.0, device="cpu", dtype=torch.float64)
    np.testing.assert_array_equal(blocks.indices, whole.indices)
    for f in ("values", "effect", "se"):  # BLAS may block the products differently: equal up to rounding
        np.testing.assert_allclose(getattr(blocks, f), getattr(whole, f), rtol=1e-12, atol=1e-14)


@needs_numba
def test_numba_leaves_torch_threads_alone() -> None:
    head, X, T = _problem(20, 30)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        kernels.score_topk(head.featurize(X), T - head.t_ref, head.coef, head.cov, 2, z=1.0, device="cpu",
                           backend="numba")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
