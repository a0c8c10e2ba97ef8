"""Monte Carlo check of the verify stage's statistics at their defaults (40 held-out queries, 1 sample,
margin 0): the coverage of the paired 95% interval of a measured uplift, and the false-promotion
rate of the nightly rule (promote when the uplift is positive and its 95% lower bound >= margin).

Outcomes are binary (a graded LLM answer). Query q has difficulty p_q ~ U(0, 1); the live prompt
scores y0 ~ Bernoulli(p_q). The challenger gives the same answer as the live prompt with probability
1 - delta (greedy decoding: similar prompts often produce the same answer, so few queries are
discordant) and otherwise answers independently, correct with probability min(1, p_q + effect).
The true uplift is delta * E[min(1, p + effect) - p].

Under the null (effect 0) a one-sided 2.5% error is the target of the rule. The engine's interval
(:func:`cpo_engine.workflows.verify.labelled`, two pseudo-queries at the score bounds) is compared
with the plain normal interval, which collapses to a point when few queries are discordant.

    python bench/bench_verify_mc.py [--reps 4000] [--queries 40]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from cpo_engine.causal.evidence import MEASURED
from cpo_engine.causal.verification import labelled, promotable

DELTAS = (0.05, 0.1, 0.2, 0.5, 1.0)


def true_uplift(delta: float, effect: float) -> float:
    """delta * E[min(1, p + effect) - p] for p ~ U(0, 1)."""
    return delta * (effect - effect ** 2 / 2)


def simulate(n: int, delta: float, effect: float, reps: int, margin: float = 0.0,
             seed: int = 0) -> dict[str, float]:
    """False-promotion (or promotion) rate and interval coverage over ``reps`` simulated verifications."""
    from cpo_engine.search import paired_interval

    rng = np.random.default_rng(seed)
    truth = true_uplift(delta, effect)
    promoted = covered = plain_promoted = plain_covered = 0
    for _ in range(reps):
        p = rng.random(n)
        y0 = (rng.random(n) < p).astype(float)
        other = (rng.random(n) < np.minimum(1.0, p + effect)).astype(float)
        y1 = np.where(rng.random(n) < delta, other, y0)
        up = labelled(y1, y0, MEASURED, "monte carlo")  # the engine's interval
        promoted += promotable(up, margin)
        covered += up.ci_low <= truth <= up.ci_high
        plain = paired_interval(y1, y0)  # the plain normal interval, for comparison
        plain_promoted += plain["diff"] > 0 and plain["ci_low"] >= margin
        plain_covered += plain["ci_low"] <= truth <= plain["ci_high"]
    return {"delta": delta, "effect": effect, "true_uplift": truth, "promotion_rate": promoted / reps,
            "coverage": covered / reps, "plain_promotion_rate": plain_promoted / reps,
            "plain_coverage": plain_covered / reps, "reps": reps, "queries": n}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=4000)
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args(argv)
    rows = [simulate(args.queries, d, e, args.reps, seed=i) for i, (d, e) in
            enumerate([(d, 0.0) for d in DELTAS] + [(d, 0.1) for d in DELTAS] + [(1.0, 0.3)])]
    for r in rows:
        kind = "false promotion" if r["effect"] == 0 else "promotion (power)"
        print(f"delta {r['delta']:<4} effect {r['effect']:<4} true uplift {r['true_uplift']:+.4f}: {kind} "
              f"{r['promotion_rate']:.4f}, 95% interval coverage {r['coverage']:.4f} (plain normal interval: "
              f"{r['plain_promotion_rate']:.4f}, {r['plain_coverage']:.4f})")
    out = Path(args.out) / f"bench_verify_mc_{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"bench": "verify_mc", "rule": "promote when uplift > 0 and 95% lower bound >= margin 0",
                               "rows": rows}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
