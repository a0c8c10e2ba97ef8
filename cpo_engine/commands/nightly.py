"""`cpo nightly`: append today's triplets, refit (cached embeddings), re-search, compare, flag drift."""

from __future__ import annotations

import argparse
from typing import Any

from cpo_engine.commands import add_common, flag_overrides

FLAG_KEYS = {
    "state": "state", "new": "new", "date": "date", "window_days": "window_days", "cv": "causal.cv",
    "featurizer": "causal.featurizer", "model_y": "causal.model_y", "model_t": "causal.model_t", "z": "selection.z",
    "min_kendall_tau": "drift.min_kendall_tau", "max_changed_share": "drift.max_changed_share",
    "max_uplift_change": "drift.max_uplift_change",
}
DRIFT_EXIT = 3


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "nightly", help="nightly re-optimization: append, refit, re-search, compare, flag drift",
        description="Append the day's triplets (a table or a `cpo generate` folder) to a state folder, refit the "
                    "causal reward model on them (embeddings come from the state's cache), rerun the search, and "
                    "compare with the live run (Kendall tau, changed queries, predicted uplift). A fit that fails "
                    "its diagnostics gate leaves the previous model live.")
    p.add_argument("--state", help="state folder kept across nights (default runs/nightly)")
    p.add_argument("--new", help="today's triplets: a triplet table or a `cpo generate` run folder")
    p.add_argument("--date", help="label of tonight's run (default: today, UTC)")
    p.add_argument("--window-days", type=int, help="fit on the last N dates only (default: all)")
    p.add_argument("--cv", type=int, help="cross-fitting folds (default 5)")
    p.add_argument("--featurizer", choices=["constant", "linear", "poly2"], help="phi(X) (default linear)")
    p.add_argument("--model-y", help="nuisance for E[Y|X] (default ridge)")
    p.add_argument("--model-t", help="nuisance for E[T|X] (default ridge)")
    p.add_argument("--z", type=float, help="lower-confidence-bound multiplier (default 1.645, as `cpo run`)")
    p.add_argument("--min-kendall-tau", type=float, help="drift when the ranking tau is below (default 0.5)")
    p.add_argument("--max-changed-share", type=float, help="drift when more queries change prompt (default 0.3)")
    p.add_argument("--max-uplift-change", type=float, help="drift when the uplift moves more (default 0.05)")
    p.add_argument("--fail-on-drift", action="store_true", help=f"exit {DRIFT_EXIT} when drift is flagged")
    add_common(p)
    p.set_defaults(func=run)
    return p


def config_from_args(args: argparse.Namespace) -> Any:
    from cpo_engine.config import load_config
    from cpo_engine.workflows import NightlyConfig

    return load_config(NightlyConfig, getattr(args, "config", None), flag_overrides(args, FLAG_KEYS))


def run(args: argparse.Namespace) -> int:
    from cpo_engine.workflows import run_nightly

    report = run_nightly(config_from_args(args))
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


__all__ = ["register", "run", "config_from_args"]
