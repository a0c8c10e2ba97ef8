"""`cpo ope`: off-policy evaluation of policies (assignment files or prompt ids) on logged triplets."""

from __future__ import annotations

import argparse

from cpo_engine.commands import (add_causal_flags, add_common, add_data_flags, apply_positional_data,
                                 config_from_args, flag, use_config)
from cpo_engine.settings import OffPolicyConfig


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("ope", help="value policies on observational logs (off-policy evaluation)",
                       description="Estimate each policy's value (mean score over the logged queries) from logs drawn "
                                   "by another policy: doubly robust by default (the causal model cross-fitted on the "
                                   "logs as reward model), with IPW, self-normalized variants and the direct method "
                                   "beside it, 95% intervals clustered by query, and the logging policy's own value; it ends with one "
                                   "decision: deploy the best policy shown better than the logging policy (paired "
                                   "difference, Bonferroni over the policies), or keep the logging policy. "
                                   "Propensities: the logs' propensity column, else a cross-fitted model of the "
                                   "logged prompt given the query features.")
    use_config(p, OffPolicyConfig)
    add_data_flags(p)
    flag(p, "policies", name="--policy", action="append")
    flag(p, "model")
    flag(p, "queries")
    flag(p, "out")
    flag(p, "ope.estimator")
    flag(p, "ope.min_propensity")
    flag(p, "ope.min_logged_propensity")
    add_causal_flags(p)
    flag(p, "seed")
    add_common(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from cpo_engine.workflows.ope import ope_table, run_ope

    apply_positional_data(args)
    result = run_ope(config_from_args(args, OffPolicyConfig))
    print(ope_table(result.values, coverage=result.coverage))
    print(f"wrote {', '.join(str(p) for p in result.paths.values())}")
    print(result.decision.line())  # the last line: the decision
    return 0
