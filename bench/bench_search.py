"""Benchmark: batched (query, candidate) scoring + per-query top-k, against baselines in the same run.

Measures, for one round of n_queries x n_candidates with a linear effect head:

- ``fused``: :func:`cpo_engine.kernels.dispatch.score_topk` (effect - z*se, running per-query top-k, chunked), the path
  the search uses: every available backend is timed (torch reference; the pruned Numba kernel on the
  CPU; Triton on CUDA) and the ratios use the one ``backend='auto'`` picks at this size.
- ``matmul``: one plain torch matmul with the same output shape and the same inner width
  (d_phi + d_pp): the hardware limit for this work, since scoring is two skinny matmuls.
- ``python_loop``: one query at a time in a Python loop (numpy over candidates, then argpartition),
  how peer tools score; timed on a subset of queries and reported as a rate.
- ``chunked``: the same round under a small memory budget, so the full score matrix never exists.

Quality: top-k agreement (recall@k) and max |objective| error of the float32 chunked path against
the float64 dense reference (:meth:`LinearHead.effect`) on a subset of queries.

Writes JSON (device, versions, commit, config, results) into bench/results/.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cpo_engine.kernels import dispatch as kernels  # noqa: E402
from cpo_engine.causal.head import LinearHead  # noqa: E402
from cpo_engine.utils import atomic_write_json, device_info, versions  # noqa: E402


def make_problem(n_q: int, n_c: int, d_x: int, d_t: int, seed: int) -> tuple[LinearHead, np.ndarray, np.ndarray]:
    """A random head with a PSD covariance, queries and candidates (the shapes of a real round)."""
    rng = np.random.default_rng(seed)
    d_phi = d_x + 1
    a = rng.normal(size=(d_phi * d_t, d_phi * d_t)) / (d_phi * d_t)
    head = LinearHead(coef=rng.normal(size=(d_phi, d_t)) * 0.1, cov=a @ a.T,
                      featurize=lambda X: np.hstack([np.ones((len(X), 1)), X]), t_ref=np.zeros(d_t))
    return head, rng.normal(size=(n_q, d_x)), rng.normal(size=(n_c, d_t))


def timed(fn: Callable[[], Any], repeats: int, sync: bool, warmup: bool = True) -> tuple[float, float, Any]:
    """Best-of-``repeats`` wall time and the process CPU time of that run, after one warm-up call when
    ``warmup``. On a shared machine wall time includes waiting for a core and CPU time does not; with
    one thread (the default) CPU-time ratios are the load-free comparison."""
    out = fn() if warmup else None
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        if sync:
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        if sync:
            torch.cuda.synchronize()
        if time.perf_counter() - t0 < best:
            best, best_cpu = time.perf_counter() - t0, time.process_time() - c0
    return best, best_cpu, out


def python_loop(head: LinearHead, X: np.ndarray, T: np.ndarray, k: int, z: float) -> np.ndarray:
    """Peer baseline: score one query at a time over all candidates, numpy inside the loop."""
    dt = T - head.t_ref
    cov4 = head.cov.reshape(head.d_phi, head.d_t, head.d_phi, head.d_t)
    out = np.empty((len(X), k), dtype=np.int64)
    for q in range(len(X)):
        phi = head.featurize(X[q:q + 1])[0]
        est = dt @ (phi @ head.coef)
        m = np.einsum("f,ftgs,g->ts", phi, cov4, phi)
        se = np.sqrt(np.clip(np.einsum("ct,ts,cs->c", dt, m, dt), 0, None))
        obj = est - z * se
        top = np.argpartition(-obj, k)[:k]
        out[q] = top[np.argsort(-obj[top])]
    return out


def quality(head: LinearHead, X: np.ndarray, T: np.ndarray, k: int, z: float, device: str,
            backend: str, budget: int) -> dict[str, float]:
    """Recall@k and max objective error of the fast path against the float64 dense reference."""
    est, se = head.effect(X, T)
    obj = est - z * se
    ref = np.argsort(-obj, axis=1)[:, :k]
    top = kernels.score_topk(head.featurize(X), T - head.t_ref, head.coef, head.cov, k, z=z, device=device,
                             backend=backend, memory_budget_bytes=budget)
    recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(top.indices, ref)])
    err = np.abs(top.values - np.take_along_axis(obj, ref, 1)).max()
    return {"recall_at_k": float(recall), "max_abs_objective_error": float(err), "n_queries": int(len(X))}


def bandwidth(res: dict[str, Any], args: argparse.Namespace, device: str) -> dict[str, float]:
    """CUDA only: device-to-device copy GB/s (the bandwidth limit) and the bytes each fused run must
    move (inputs + per-tile partial top-k) over its time; the fused kernel is compute-bound when the
    second is far below the first."""
    x = torch.empty(256 * 2**20, dtype=torch.float32, device=device)
    sec, _, _ = timed(lambda: x.clone(), args.repeats, True)
    d_phi = args.d_x + 1
    d_in = d_phi + d_phi * (d_phi + 1) // 2
    moved = 4 * d_in * (args.n_queries + args.n_candidates) + 8 * args.n_queries * (args.n_candidates // 128 + 1) * args.k
    out = {"copy_gb_per_s": 2 * x.numel() * 4 / sec / 1e9}
    for be in ("torch", "triton"):
        if f"fused_{be}" in res:
            out[f"fused_{be}_gb_per_s"] = moved / res[f"fused_{be}"]["seconds"] / 1e9
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    sync = device.startswith("cuda")
    head, X, T = make_problem(args.n_queries, args.n_candidates, args.d_x, args.d_t, args.seed)
    phi, dt = head.featurize(X), T - head.t_ref
    pairs = args.n_queries * args.n_candidates
    res: dict[str, Any] = {}
    # first, so the peak-RSS growth is this run's own
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sec, _, _ = timed(lambda: kernels.score_topk(phi, dt, head.coef, head.cov, args.k, z=args.z, device=device,
                                              backend="torch", memory_budget_bytes=args.small_budget_mb << 20),
                   1, sync, warmup=False)
    res["chunked_small_budget"] = {
        "seconds": sec, "pairs_per_second": pairs / sec, "budget_mb": args.small_budget_mb,
        "chunks": kernels.choose_chunks(args.n_queries, args.n_candidates, 4, args.small_budget_mb << 20),
        "full_matrix_mb": pairs * 4 / 2**20, "peak_rss_growth_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                                                    - rss0) / 1024}
    backends = (["torch"] + (["numba"] if kernels.numba_available(device) else [])
                + (["triton"] if kernels.triton_available(device) else []))
    for be in backends:
        def run_be(be: str = be) -> Any:
            return kernels.score_topk(phi, dt, head.coef, head.cov, args.k, z=args.z, device=device, backend=be,
                                      memory_budget_bytes=args.budget_mb << 20)

        first, _, _ = timed(run_be, 1, sync, warmup=False)  # includes loading / compiling a JIT kernel
        sec, cpu, _ = timed(run_be, args.repeats, sync, warmup=False)
        res[f"fused_{be}"] = {"seconds": sec, "cpu_seconds": cpu, "pairs_per_second": pairs / sec,
                              "first_call_seconds": first}
    auto = kernels.choose_backend("auto", device, torch.float32, pairs)
    d_in = head.d_phi + head.d_phi * (head.d_phi + 1) // 2
    A = torch.randn(args.n_queries, d_in, device=device)
    B = torch.randn(d_in, args.n_candidates, device=device)
    sec, cpu, _ = timed(lambda: A @ B, args.repeats, sync)
    res["matmul"] = {"seconds": sec, "cpu_seconds": cpu, "pairs_per_second": pairs / sec, "inner_dim": d_in}
    n_loop = min(args.loop_queries, args.n_queries)
    sec, _, _ = timed(lambda: python_loop(head, X[:n_loop], T, args.k, args.z), 1, False, warmup=False)
    res["python_loop"] = {"seconds_for_subset": sec, "queries_timed": n_loop,
                          "pairs_per_second": n_loop * args.n_candidates / sec}
    fused = res["fused_" + auto]["pairs_per_second"]
    res["auto_backend"] = auto
    res["ratios"] = {"fused_vs_matmul": fused / res["matmul"]["pairs_per_second"],
                     "fused_vs_python_loop": fused / res["python_loop"]["pairs_per_second"],
                     "torch_reference_vs_matmul": res["fused_torch"]["pairs_per_second"]
                     / res["matmul"]["pairs_per_second"]}
    if not sync:
        res["ratios"]["fused_vs_matmul_cpu_time"] = res["matmul"]["cpu_seconds"] / res["fused_" + auto]["cpu_seconds"]
    if "fused_numba" in res:
        res["ratios"]["numba_vs_torch"] = res["fused_numba"]["pairs_per_second"] / res["fused_torch"]["pairs_per_second"]
    if "fused_triton" in res:
        res["ratios"]["triton_vs_torch"] = res["fused_triton"]["pairs_per_second"] / res["fused_torch"]["pairs_per_second"]
    if sync:
        res["bandwidth"] = bandwidth(res, args, device)
    q = min(args.quality_queries, args.n_queries)
    res["quality"] = {be: quality(head, X[:q], T, args.k, args.z, device, be, args.budget_mb << 20) for be in backends}
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-queries", type=int, default=10_000)
    p.add_argument("--n-candidates", type=int, default=10_000)
    p.add_argument("--d-x", type=int, default=8, help="query PCA width (phi adds a constant)")
    p.add_argument("--d-t", type=int, default=8, help="prompt PCA width")
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--z", type=float, default=1.0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--budget-mb", type=int, default=32, help="memory budget of the fused run (the CPU default)")
    p.add_argument("--small-budget-mb", type=int, default=4, help="budget of the chunked run")
    p.add_argument("--loop-queries", type=int, default=300, help="queries timed in the Python-loop baseline")
    p.add_argument("--quality-queries", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = p.parse_args(argv)
    res = run(args)
    record = {"benchmark": "bench_search", "config": vars(args), "device": device_info(), "versions": versions(),
              "results": res}
    dev = "cuda" if record["device"].get("cuda") and args.device != "cpu" else "cpu"
    path = Path(args.out) / f"bench_search_{dev}_{time.strftime('%Y%m%dT%H%M%S')}.json"
    atomic_write_json(path, record)
    print(json.dumps(res, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
