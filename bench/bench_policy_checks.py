"""Monte Carlo of the policy's reliability checks at their defaults (cpo_engine.policy.policy).

The "outcome R^2 near zero" check only fires when the joint Wald test of effect heterogeneity
(every row of theta(X) = B^T phi(X) but the constant one is zero) is not significant at 5%. This
checks that test on seeded synthetic DML data (cpo_engine.causal.synthetic, query-grouped rows,
confounded T) fitted with the default CausalRewardModel (final_alpha = "cv"):

- size: share of data sets with p < 0.05 when the effect does not vary with the query (should be
  about 0.05; a cluster-robust test with few clusters runs somewhat above);
- power: the same share when it does (heterogeneity 0.1 and 0.3);
- how often the whole check set (reliability_problems, default PolicyConfig) falls back, with many
  and with few queries.

    python bench/bench_policy_checks.py --reps 400          # about 2-4 min on 2 CPU cores
    python bench/bench_policy_checks.py --reps 40 --quick   # smoke
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cpo_engine.utils import atomic_write_json, device_info, versions  # noqa: E402


def simulate(n_groups: int, heterogeneity: float, seed: int) -> dict[str, float | list[str]]:
    """One data set: the heterogeneity p-value and the checks that fail."""
    from cpo_engine.causal import CausalRewardModel
    from cpo_engine.causal.synthetic import make_synthetic
    from cpo_engine.settings import PolicyConfig
    from cpo_engine.policy.policy import heterogeneity_p_value, reliability_problems

    d = make_synthetic(n_groups=n_groups, rows_per_group=5, heterogeneity=heterogeneity, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = CausalRewardModel(device="cpu", random_state=seed).fit(d.Y, d.T, X=d.X, groups=d.groups)
    head = m.linear_head()
    p = heterogeneity_p_value(head)
    evidence = {"n_train_queries": n_groups, "n_heterogeneity_coefs": (head.d_phi - 1) * head.d_t,
                "outcome_r2": m.diagnostics_.r2_y, "heterogeneity_p_value": p}
    return {"p": p, "problems": reliability_problems(evidence, PolicyConfig())}


def run(reps: int, n_groups: int, small: int) -> dict:
    out = {}
    for name, (n, het) in {"null": (n_groups, 0.0), "weak": (n_groups, 0.1), "strong": (n_groups, 0.3),
                           "few_queries": (small, 0.3)}.items():
        t0 = time.perf_counter()
        sims = [simulate(n, het, seed) for seed in range(reps)]
        p = np.array([s["p"] for s in sims])
        rate = float(np.mean(p < 0.05))
        out[name] = {"n_groups": n, "heterogeneity": het, "reps": reps, "reject_at_0.05": rate,
                     "reject_se": float(np.sqrt(rate * (1 - rate) / reps)),
                     "fallback_rate": float(np.mean([bool(s["problems"]) for s in sims])),
                     "seconds": round(time.perf_counter() - t0, 1)}
        print(name, json.dumps(out[name]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=400)
    ap.add_argument("--n-groups", type=int, default=300, help="queries per data set (5 rows each)")
    ap.add_argument("--small", type=int, default=40, help="queries of the few-queries scenario")
    ap.add_argument("--quick", action="store_true", help="do not write a result file")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    a = ap.parse_args(argv)
    res = run(a.reps, a.n_groups, a.small)
    if not a.quick:
        record = {"benchmark": "bench_policy_checks", "config": vars(a), "device": device_info(),
                  "versions": versions(), "results": res}
        path = atomic_write_json(Path(a.out) / "bench_policy_checks.json", record)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
