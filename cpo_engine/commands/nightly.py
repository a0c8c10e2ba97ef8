"""`cpo nightly`: append today's triplets, refit (cached embeddings), re-search, compare, flag drift."""

from __future__ import annotations

import argparse
from typing import Any

from cpo_engine.commands import add_causal_flags, add_common, config_from_args, flag

DRIFT_EXIT = 3


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "nightly", help="nightly re-optimization: append, refit, re-search, compare, flag drift",
        description="Append the day's triplets (a table or a `cpo generate` folder) to a state folder, refit the "
                    "causal reward model on them (embeddings come from the state's cache), rerun the search, and "
                    "compare with the live run (Kendall tau, changed queries, predicted uplift). A fit that fails "
                    "its diagnostics gate leaves the previous model live.")
    flag(p, "--state", "state", "state folder kept across nights (default runs/nightly)")
    flag(p, "--new", "new", "today's triplets: a triplet table or a `cpo generate` run folder")
    flag(p, "--date", "date", "label of tonight's run (default: today, UTC)")
    flag(p, "--window-days", "window_days", "fit on the last N dates only (default: all)", type=int)
    add_causal_flags(p)
    flag(p, "--z", "selection.z", "lower-confidence-bound multiplier (default 1.645, as `cpo run`)", type=float)
    flag(p, "--min-kendall-tau", "drift.min_kendall_tau", "drift when the ranking tau is below this", type=float)
    flag(p, "--max-changed-share", "drift.max_changed_share", "drift when a larger share of queries changes prompt",
         type=float)
    flag(p, "--max-uplift-change", "drift.max_uplift_change", "drift when the predicted uplift moves more",
         type=float)
    p.add_argument("--fail-on-drift", action="store_true", help=f"exit {DRIFT_EXIT} when drift is flagged")
    add_common(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from cpo_engine.workflows import run_nightly

    from cpo_engine.workflows import NightlyConfig

    report = run_nightly(config_from_args(args, NightlyConfig))
    print(f"nightly {report['date']}: {report['rows']:,} triplets over {len(report['dates'])} date(s); "
          f"model {report['model_status']} (live: {report['live_run']})")
    for problem in report["gate_problems"]:
        print(f"  gate: {problem}")
    comp = report.get("comparison")
    if comp:
        tau = "n/a" if comp["kendall_tau"] is None else f"{comp['kendall_tau']:.3f}"
        changed = "n/a" if comp["changed_share"] is None else f"{comp['changed_share']:.1%}"
        print(f"  vs {comp['previous_run']}: Kendall tau {tau}, queries changed {changed}, "
              f"uplift {comp['uplift_previous']:+.4f} -> {comp['uplift_new']:+.4f}")
        for reason in comp["drift_reasons"]:
            print(f"  DRIFT: {reason}")
    drift = bool(comp and comp["drift"])
    return DRIFT_EXIT if drift and getattr(args, "fail_on_drift", False) else 0


__all__ = ["register", "run"]
