"""Monte Carlo: coverage of the off-policy intervals the engine prints, at their defaults (OPEConfig()).

Simulated contextual bandits with known cell means (cpo_engine.causal.synthetic.make_bandit): queries
x ~ N(0, 1), a confounded softmax logging policy, a per-query target policy (the best prompt per
query) and a static one, a deliberately biased reward model. Each replication draws fresh queries and
logs; each estimator's 95% interval (and the static policy's DR interval and bounds: the static
prompt is rarely logged for half of the queries when the logging is confounded) is checked against
the population value (a mean over 200,000
fresh queries), so the intervals' query-sampling part is checked too. Also checked: the paired
difference (per-query minus static), the bounds, the on-policy (logging policy) interval, and the same
estimators with propensities from the cross-fitted propensity model instead of the true ones.

    python bench/bench_ope.py                 # 400 replications per scenario
    python bench/bench_ope.py --reps 100      # quick
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np

SCENARIOS = {  # name -> (strength, exploration)
    "uniform logging": (0.0, 0.0),
    "confounded, exploration 0.2": (1.5, 0.2),
    "confounded, no exploration": (3.0, 0.0),
}


def _wilson(hits: int, n: int) -> list[float]:
    z, p = 1.959964, hits / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [float(c - h), float(c + h)]


def _population(n_prompts: int) -> dict[str, float]:
    from cpo_engine.causal.synthetic import bandit_cells

    mu = bandit_cells(np.random.default_rng(12345).normal(size=200_000), n_prompts)
    per_query, static = float(mu.max(1).mean()), float(mu[:, 0].mean())
    return {"per_query": per_query, "static": static, "difference": per_query - static}


def _one(rng, strength, exploration, n_queries, rows, n_prompts, estimated: bool) -> dict[str, list]:
    from cpo_engine.causal import ope
    from cpo_engine.causal.ope import BanditLogs, OPEConfig, estimate_policy_value
    from cpo_engine.causal.propensity import PropensityModel
    from cpo_engine.causal.synthetic import make_bandit

    b = make_bandit(n_queries, n_prompts, rows, strength, exploration, seed=rng)
    q_hat = np.clip(b.mu + 0.1 * b.x[:, None], 0, 1)  # biased reward model
    target = np.argmax(b.mu, axis=1)
    P = b.pi0
    if estimated:
        P = PropensityModel(random_state=0).fit(b.x[b.q, None], b.a, n_prompts=n_prompts, groups=b.q).oof_
        P = P[np.unique(b.q, return_index=True)[1]]
    logs = BanditLogs(b.q, b.a, b.y, P[b.q, b.a])
    out: dict[str, list] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ope.OverlapWarning)
        pq = estimate_policy_value(logs, target, q_hat, OPEConfig(), propensity_matrix=P, y_range=(0, 1))
        st = estimate_policy_value(logs, 0, q_hat, OPEConfig(), propensity_matrix=P, y_range=(0, 1))
    for name, e in pq.items():
        out[name] = [e.ci_low, e.ci_high, e.value]
    out["dr_static"] = [st["dr"].ci_low, st["dr"].ci_high, st["dr"].value]
    out["dr_static_bounds"] = [st["dr"].bounds[0], st["dr"].bounds[1], st["dr"].value]
    out["dr_static_reported"] = [*st["dr"].reported, st["dr"].value]  # the bounds when off support
    out["off_support_static"] = [st["dr"].off_support or 0.0]
    d = ope.paired_difference(pq["dr"], st["dr"])
    out["dr_difference"] = [d["ci_low"], d["ci_high"], d["diff"]]
    out["dr_bounds"] = [pq["dr"].bounds[0], pq["dr"].bounds[1], pq["dr"].value]
    out["off_support"] = [pq["dr"].off_support or 0.0]
    on = ope.on_policy_value(BanditLogs(b.q, b.a, b.y, b.pi0[b.q, b.a]))
    out["on_policy"] = [on.ci_low, on.ci_high, on.value, float((b.pi0 * b.mu).sum(1).mean())]
    return out


def run(reps: int, n_queries: int, rows: int, n_prompts: int, estimated: bool) -> dict:
    pop = _population(n_prompts)
    rng = np.random.default_rng(0)
    results = {}
    for name, (strength, exploration) in SCENARIOS.items():
        t0 = time.perf_counter()
        runs = [_one(rng, strength, exploration, n_queries, rows, n_prompts, estimated) for _ in range(reps)]
        pop_logging = _population_logging(strength, exploration, n_prompts)
        res = {}
        for key in runs[0]:
            if key.startswith("off_support"):
                res[key] = float(np.mean([r[key][0] for r in runs]))
                continue
            truth = {"on_policy": pop_logging, "dr_difference": pop["difference"], "dr_static": pop["static"],
                     "dr_static_bounds": pop["static"], "dr_static_reported": pop["static"]}.get(key, pop["per_query"])
            arr = np.array([r[key][:3] for r in runs])
            hits = int(((arr[:, 0] <= truth) & (truth <= arr[:, 1])).sum())
            res[key] = {"coverage": hits / reps, "coverage_ci": _wilson(hits, reps),
                        "bias": float(arr[:, 2].mean() - truth), "rmse": float(np.sqrt(((arr[:, 2] - truth) ** 2).mean())),
                        "mean_width": float((arr[:, 1] - arr[:, 0]).mean())}
        results[name] = res | {"seconds": round(time.perf_counter() - t0, 1)}
        print(name, {k: (v["coverage"] if isinstance(v, dict) else v) for k, v in res.items()}, flush=True)
    return {"population": pop, "scenarios": results}


def _population_logging(strength: float, exploration: float, n_prompts: int) -> float:
    from cpo_engine.causal.synthetic import bandit_cells

    x = np.random.default_rng(12345).normal(size=200_000)
    logit = strength * x[:, None] * np.linspace(-1, 1, n_prompts)[None, :]
    pi0 = np.exp(logit - logit.max(1, keepdims=True))
    pi0 = (1 - exploration) * pi0 / pi0.sum(1, keepdims=True) + exploration / n_prompts
    return float((pi0 * bandit_cells(x, n_prompts)).sum(1).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=400)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--rows-per-query", type=int, default=1, help="1: observational logs, one prompt per query")
    ap.add_argument("--prompts", type=int, default=5)
    ap.add_argument("--out", default="bench/results/bench_ope.json")
    args = ap.parse_args()
    from dataclasses import asdict

    from cpo_engine.causal.ope import OPEConfig
    from cpo_engine.utils import atomic_write_json, versions

    result = {"config": vars(args) | {"ope": asdict(OPEConfig())}, "versions": versions(),
              "known_propensities": run(args.reps, args.queries, args.rows_per_query, args.prompts, False),
              "estimated_propensities": run(max(args.reps // 2, 20), args.queries, args.rows_per_query, args.prompts,
                                            True)}
    atomic_write_json(Path(args.out), result)
    print(f"wrote {args.out}")
    print(json.dumps({k: {s: {e: r[e]["coverage"] for e in ("dr", "snips", "sndr", "ipw", "dr_difference", "dr_bounds",
                                                             "dr_static", "dr_static_bounds", "dr_static_reported")}
                          for s, r in v["scenarios"].items()} for k, v in result.items()
                      if k.endswith("propensities")}, indent=1))


if __name__ == "__main__":
    main()
