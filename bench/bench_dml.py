"""Benchmark: CausalRewardModel (ridge nuisances, clustered covariance) vs econml LinearDML (RidgeCV).

Same synthetic data (known theta(X); 10 rows per query, d_X = 16, d_T = 8), same grouped folds, same
run. Each (method, n) cell runs in a fresh subprocess: one warm-up fit on the same data (imports,
allocator, caches), then ``--repeats`` timed fits; the best and the median are reported, with the
machine's load average before and after each cell (a ratio measured on a busy machine is noisy: run
it idle). Peak memory is the warm-up fit's RSS growth. Accuracy beside every time: RMSE of theta(X) on
held-out queries and the mean per-query Kendall tau-b of predicted vs true effects of 20 candidates.
Optional: the MLP nuisance, econml's default nuisances and CausalForestDML (``--mlp-max-n`` etc.).

    python bench/bench_dml.py --quick            # 10k, 50k rows (a smoke run)
    python bench/bench_dml.py                    # 50k and 1M rows, 3 timed fits each: the speed claim
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROWS_PER_QUERY = 10
D_X, D_T = 16, 8
RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-3, 3, 13))


def _data(n: int, seed: int = 0):
    from cpo_engine.causal.synthetic import make_synthetic

    return make_synthetic(n_groups=n // ROWS_PER_QUERY, rows_per_group=ROWS_PER_QUERY, d_x=D_X, d_t=D_T,
                          confounding=1.5, seed=seed)


def _folds(groups: np.ndarray, k: int = 5):
    f = np.random.default_rng(0).permutation(groups.max() + 1)[groups] % k
    return [(np.flatnonzero(f != i), np.flatnonzero(f == i)) for i in range(k)]


def _make(method: str, folds):
    """(fit(d) -> model, cme(model, X) -> (n, d_T)) for one method."""
    from sklearn.linear_model import RidgeCV

    if method.startswith("engine"):
        from cpo_engine.causal import CausalRewardModel, TorchMLP

        nuis = "ridge" if method == "engine_ridge" else TorchMLP(hidden=(64,), max_epochs=15, device="auto")
        # OLS final stage, as econml's LinearDML it is compared with
        model = CausalRewardModel(model_y=nuis, model_t=nuis, cv=folds, final_alpha=0.0, device="auto")
        return (lambda d: model.fit(d.Y, d.T, X=d.X, groups=d.groups)), (lambda m, X: m.const_marginal_effect(X))
    from econml.dml import CausalForestDML, LinearDML

    if method == "econml_linear":  # same nuisance family: ridge with a CV penalty
        model = LinearDML(model_y=RidgeCV(alphas=RIDGE_ALPHAS), model_t=RidgeCV(alphas=RIDGE_ALPHAS), cv=folds)
    elif method == "econml_linear_default":
        model = LinearDML(cv=folds, random_state=0)
    elif method == "econml_forest":
        model = CausalForestDML(model_y=RidgeCV(alphas=RIDGE_ALPHAS), model_t=RidgeCV(alphas=RIDGE_ALPHAS),
                                cv=folds, n_estimators=100, random_state=0, n_jobs=1)
    else:
        raise ValueError(method)
    return (lambda d: model.fit(d.Y, d.T, X=d.X)), \
        (lambda m, X: np.asarray(m.const_marginal_effect(X)).reshape(len(X), D_T))


def _tau_b(pred: np.ndarray, true: np.ndarray) -> float:
    from cpo_engine.causal.evaluation import tau_b_rows

    return float(np.nanmean(tau_b_rows(pred, true)))


def _worker(method: str, n: int, threads: int, repeats: int, queue) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import warnings

    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(threads)  # numpy's BLAS was loaded with the module: the env var alone comes too late
    warnings.filterwarnings("ignore")
    d = _data(n)
    fit, cme = _make(method, _folds(d.groups))
    load_before = os.getloadavg()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fit(d)  # warm-up on the same data: imports, allocator, caches
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model = fit(d)
        times.append(time.perf_counter() - t0)
    Xq = np.random.default_rng(1).normal(size=(300, D_X))  # fresh queries, same true theta
    theta_hat, theta = cme(model, Xq), d.theta(Xq)
    cands = np.random.default_rng(2).normal(size=(20, D_T))
    queue.put({"method": method, "n": n, "fit_s": round(min(times), 4), "fit_s_median": round(float(np.median(times)), 4),
               "fit_s_all": [round(t, 4) for t in times], "peak_rss_delta_mb": round(max(peak - base, 0) / 1024, 1),
               "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
               "theta_rmse": float(np.sqrt(np.mean((theta_hat - theta) ** 2))),
               "tau_b": _tau_b(theta_hat @ cands.T, theta @ cands.T)})


def run_one(method: str, n: int, threads: int, timeout: float, repeats: int = 3) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_worker, args=(method, n, threads, repeats, q))
    p.start()
    p.join(timeout)
    if p.is_alive():
        p.terminate()
        return {"method": method, "n": n, "error": f"timed out after {timeout:.0f} s"}
    return q.get() if not q.empty() else {"method": method, "n": n, "error": f"exit code {p.exitcode}"}


def plan(args) -> list[tuple[str, int]]:
    jobs = []
    for n in args.sizes:
        jobs += [("engine_ridge", n), ("econml_linear", n)]
        if n <= args.mlp_max_n:
            jobs.append(("engine_mlp", n))
        if n <= args.default_max_n:
            jobs.append(("econml_linear_default", n))
        if n <= args.forest_max_n:
            jobs.append(("econml_forest", n))
    jobs += [("engine_ridge", n) for n in args.engine_sizes]
    return [j for j in jobs if not args.methods or j[0] in args.methods]


def ratios(results: list[dict]) -> dict:
    """Fit-time ratio of each econml method to the engine at the same n: best/best and median/median,
    with the ratio of their theta RMSEs (1 = equally accurate)."""
    by = {(r["method"], r["n"]): r for r in results if "fit_s" in r}
    out = {}
    for (m, n), r in by.items():
        eng = by.get(("engine_ridge", n))
        if m.startswith("econml") and eng:
            out[f"{m}/engine_ridge@{n}"] = {
                "best": round(r["fit_s"] / eng["fit_s"], 2),
                "median": round(r.get("fit_s_median", r["fit_s"]) / eng.get("fit_s_median", eng["fit_s"]), 2),
                "rmse_ratio": round(r["theta_rmse"] / eng["theta_rmse"], 4)}
    return out


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[50_000, 1_000_000])
    p.add_argument("--engine-sizes", type=int, nargs="*", default=[], help="engine-only sizes")
    p.add_argument("--forest-max-n", type=int, default=0, help="largest n for CausalForestDML (0: skip)")
    p.add_argument("--mlp-max-n", type=int, default=0, help="largest n for the MLP nuisance (0: skip)")
    p.add_argument("--default-max-n", type=int, default=0, help="largest n for econml's default nuisances (0: skip)")
    p.add_argument("--methods", nargs="*", default=None, help="restrict to these methods")
    p.add_argument("--repeats", type=int, default=3, help="timed fits per cell after one warm-up fit")
    p.add_argument("--threads", type=int, default=1, help="BLAS/torch threads for every method")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per cell before giving up")
    p.add_argument("--quick", action="store_true", help="10k and 50k rows only")
    p.add_argument("--out", default="bench/results/bench_dml.json")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.engine_sizes = [10_000, 50_000], []
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    from cpo_engine.utils import atomic_write_json, device_info, versions

    load_start, results = os.getloadavg(), []
    for method, n in plan(args):
        r = run_one(method, n, args.threads, args.timeout, args.repeats)
        print(json.dumps(r), flush=True)
        results.append(r)
    report = {"benchmark": "bench_dml", "device": device_info(), "versions": versions(),
              "config": vars(args) | {"rows_per_query": ROWS_PER_QUERY, "d_x": D_X, "d_t": D_T, "cv": 5},
              "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
              "results": results, "fit_time_ratios": ratios(results), "notes": NOTES}
    atomic_write_json(args.out, report)
    print(json.dumps(report["fit_time_ratios"], indent=1))
    return 0


NOTES = [
    "fit_s is the best of --repeats timed fits after one warm-up fit on the same data (fit_s_median the "
    "median); the load average (1, 5, 15 min) is recorded before and after each cell: ratios from a "
    "loaded machine are noisy",
    "econml_linear uses sklearn RidgeCV nuisances (the same model family as engine_ridge); "
    "econml_linear_default uses econml's default ('auto') nuisances",
    "all methods share the same grouped 5-fold split; peak_rss_delta_mb = peak RSS growth during fit",
    "theta_rmse: RMSE of theta(X) (n x d_T) on 300 held-out queries; tau_b: mean per-query Kendall "
    "tau-b of predicted vs true effects of 20 random candidate prompt vectors",
]

if __name__ == "__main__":
    sys.exit(main())
