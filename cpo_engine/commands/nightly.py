"""`cpo nightly`: refit on today's triplets (cached embeddings), search, verify with the LLM, promote
only what was measured, compare with the live run, flag drift."""

from __future__ import annotations

import argparse

from cpo_engine.commands import add_beam_flags, add_causal_flags, add_common, config_from_args, flag
from cpo_engine.commands.verify import add_verify_flags
from cpo_engine.search.proposers import proposer_help, proposer_names

DRIFT_EXIT = 3
FAILED_EXIT = 4


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "nightly", help="nightly re-optimization: refit, search, verify, promote what was measured, flag drift",
        description="Refit the causal reward model on the state's triplets plus today's (a table or a `cpo "
                    "generate` folder; embeddings come from the state's cache), run the generative search, and "
                    "compare with the live run (Kendall tau, changed queries, predicted uplift). Today's triplets "
                    "are stored only once the fit passed its diagnostics gate, and the live run is never modified. "
                    "With an LLM configured (--verify-base-url ...), tonight's prompts and per-query policy run "
                    "on held-out queries against the live one, and a new one goes live only when its measured "
                    f"uplift has a 95%% lower bound >= --margin. Exit codes: 0 ok, 2 bad input, {DRIFT_EXIT} "
                    f"drift with --fail-on-drift (the drifted model is not promoted), {FAILED_EXIT} failed night "
                    "(the fit raised or failed the gate; the previous model stays live).")
    flag(p, "--state", "state", "state folder kept across nights (default runs/nightly)")
    flag(p, "--new", "new", "today's triplets: a triplet table or a `cpo generate` run folder")
    flag(p, "--date", "date", "label of tonight's run (default: today, UTC)")
    flag(p, "--window-days", "window_days", "fit on the last N dates only (default: all)", type=int)
    add_causal_flags(p)
    from cpo_engine.search.config import SelectionConfig

    flag(p, "--z", "selection.z", f"lower-confidence-bound multiplier (default {SelectionConfig.z:g}, as `cpo run`)",
         type=float)
    flag(p, "--proposer", "proposer.kind", f"where new prompts come from. {proposer_help()}",
         choices=proposer_names())
    flag(p, "--llm-base-url", "proposer.llm_base_url", "OpenAI-compatible server (llm proposer)")
    add_beam_flags(p)
    flag(p, "--min-kendall-tau", "drift.min_kendall_tau", "drift when the ranking tau is below this", type=float)
    flag(p, "--max-changed-share", "drift.max_changed_share", "drift when a larger share of queries changes prompt",
         type=float)
    flag(p, "--max-uplift-change", "drift.max_uplift_change", "drift when the predicted uplift moves more",
         type=float)
    flag(p, "--fail-on-drift", "drift.fail_on_drift", f"do not promote a drifted model; exit {DRIFT_EXIT}",
         action="store_const", const=True)
    add_verify_flags(p)
    flag(p, "--margin", "verify.margin", "promotion margin: lower 95%% bound of the measured uplift over the live "
                                         "one must be >= this (default 0)", type=float)
    add_common(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from cpo_engine.workflows import NightlyConfig, run_nightly
    from cpo_engine.workflows.nightly import FAILED_STATUSES

    report = run_nightly(config_from_args(args, NightlyConfig))
    print(f"nightly {report['date']}: {report['rows']:,} triplets over {len(report['dates'])} date(s); "
          f"model {report['model_status']} (live: {report['live_run']}); report {report['report_path']}")
    for problem in report["gate_problems"]:
        print(f"  gate: {problem}")
    comp = report.get("comparison")
    if comp:
        tau = "n/a" if comp["kendall_tau"] is None else f"{comp['kendall_tau']:.3f}"
        changed = "n/a" if comp["changed_share"] is None else f"{comp['changed_share']:.1%}"
        print(f"  vs {comp['previous_run']}: Kendall tau {tau}, queries changed {changed}, "
              f"uplift {comp['uplift_previous']:+.4f} -> {comp['uplift_new']:+.4f} [predicted]")
        for reason in comp["drift_reasons"]:
            print(f"  DRIFT: {reason}")
    promotion = report.get("promotion")
    if promotion:
        best = (promotion.get("search") or {}).get("best")
        if best:
            u = best["uplift"]
            print(f"  searched best: {best['text']!r}: uplift {u['value']:+.4f} (95% CI {u['ci_low']:+.4f} to "
                  f"{u['ci_high']:+.4f}) [predicted]")
        print(f"  live prompt/policy: {promotion['status']}: {promotion['reason']}")
    if report["model_status"] in FAILED_STATUSES:
        return FAILED_EXIT
    return DRIFT_EXIT if report["model_status"] == "drift_blocked" else 0


__all__ = ["register", "run"]
