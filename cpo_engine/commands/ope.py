"""`cpo ope`: off-policy evaluation of policies (assignment files or prompt ids) on logged triplets."""

from __future__ import annotations

import argparse

from cpo_engine.causal.ope_estimators import estimator_help, estimator_names
from cpo_engine.commands import (
    add_causal_flags,
    add_common,
    add_data_flags,
    apply_positional_data,
    config_from_args,
    flag,
)


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("ope", help="value policies on observational logs (off-policy evaluation)",
                       description="Estimate each policy's value (mean score over the logged queries) from logs drawn "
                                   "by another policy: doubly robust by default (the causal model cross-fitted on the "
                                   "logs as reward model), with IPW, self-normalized variants and the direct method "
                                   "beside it, 95%% intervals clustered by query, and the logging policy's own value. "
                                   "Propensities: the logs' propensity column, else a cross-fitted model of the "
                                   "logged prompt given the query features.")
    add_data_flags(p)
    flag(p, "--policy", "policies", "an assignment file (query_id, recommended_prompt_id; or query_id, prompt_id, "
         "probability) or a logged prompt id; repeatable (default: every logged prompt as a static policy)",
         action="append")
    flag(p, "--model", "model", "reward model: a model bundle or a `cpo run`/`cpo fit` folder (default: cross-fit "
         "the causal model on the logs)")
    flag(p, "--queries", "queries", "value on the test rows of an assignment with a split column (auto), or all",
         choices=["auto", "test", "all"])
    flag(p, "--out", "out", "output folder (ope.json, ope.md)")
    flag(p, "--estimator", "ope.estimator", f"headline estimator. {estimator_help()}", choices=estimator_names())
    flag(p, "--min-propensity", "ope.min_propensity", "clipping floor of estimated propensities", type=float)
    flag(p, "--min-logged-propensity", "ope.min_logged_propensity",
         "clipping floor of the logs' own propensity column", type=float)
    add_causal_flags(p)
    flag(p, "--seed", "seed", "seed of the folds", type=int)
    add_common(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from cpo_engine.workflows import OffPolicyConfig
    from cpo_engine.workflows.ope import ope_table, run_ope

    apply_positional_data(args)
    result = run_ope(config_from_args(args, OffPolicyConfig))
    print(f"{result.n_queries} logged queries")
    print(ope_table(result.values))
    print(f"wrote {', '.join(str(p) for p in result.paths.values())}")
    return 0
