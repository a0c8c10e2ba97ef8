"""`cpo nightly`: refit on today's triplets (cached embeddings), search, verify with the LLM, promote
only what was measured, compare with the live run, flag drift."""

from __future__ import annotations

import argparse

from cpo_engine.commands import (add_beam_flags, add_causal_flags, add_common, add_table_flags, add_tracking_flags,
                                 config_from_args, flag, use_config)
from cpo_engine.settings import NightlyConfig
from cpo_engine.commands.verify import add_verify_flags

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
                    "uplift has a 95% lower bound >= --margin; without one, a share of today's fresh queries is "
                    "held out of the fit and a prompt or policy goes live when its value there beats the live "
                    "one's with a lower confidence bound > promote.margin (--set promote.holdout_share=..., "
                    "promote.level=...). `cpo assign --model STATE` serves what is live. Exit codes: 0 ok, 2 bad "
                    f"input, {DRIFT_EXIT} "
                    f"drift with --fail-on-drift (the drifted model is not promoted), {FAILED_EXIT} failed night "
                    "(the fit raised or failed the gate; the previous model stays live).")
    use_config(p, NightlyConfig)
    flag(p, "state")
    flag(p, "new")
    add_table_flags(p)
    flag(p, "date")
    flag(p, "window_days")
    add_causal_flags(p)

    flag(p, "selection.z")
    flag(p, "proposer.kind", name="--proposer")
    flag(p, "proposer.llm_base_url")
    add_beam_flags(p)
    flag(p, "drift.min_kendall_tau")
    flag(p, "drift.max_changed_share")
    flag(p, "drift.max_uplift_change")
    flag(p, "drift.fail_on_drift", action="store_const", const=True)
    add_verify_flags(p)
    flag(p, "verify.margin")
    add_tracking_flags(p)
    add_common(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from cpo_engine.workflows import run_nightly

    result = run_nightly(config_from_args(args, NightlyConfig))
    print(f"nightly {result.date}: {result.rows:,} triplets over {len(result.dates)} date(s); "
          f"model {result.model_status} (live: {result.live_run}); report {result.report_uri or result.report_path}")
    for problem in result.gate_problems:
        print(f"  gate: {problem}")
    comp = result.comparison
    if comp:
        tau = "n/a" if comp["kendall_tau"] is None else f"{comp['kendall_tau']:.3f}"
        changed = "n/a" if comp["changed_share"] is None else f"{comp['changed_share']:.1%}"
        print(f"  vs {comp['previous_run']}: Kendall tau {tau}, queries changed {changed}, "
              f"uplift {comp['uplift_previous']:+.4f} -> {comp['uplift_new']:+.4f} [predicted]")
        for reason in comp["drift_reasons"]:
            print(f"  DRIFT: {reason}")
    promotion = result.promotion
    if promotion:
        best = (promotion.get("search") or {}).get("best")
        if best:
            u = best["uplift"]
            print(f"  searched best: {best['text']!r}: uplift {u['value']:+.4f} (95% CI {u['ci_low']:+.4f} to "
                  f"{u['ci_high']:+.4f}) [predicted]")
        print(f"  live prompt/policy: {promotion['status']}: {promotion['reason']}")
    if result.failed:
        return FAILED_EXIT
    return DRIFT_EXIT if result.model_status == "drift_blocked" else 0


__all__ = ["register", "run"]
