"""`cpo fit`: fit the causal reward model on triplets and save a model bundle (no pickle)."""

from __future__ import annotations

import argparse

from cpo_engine.commands import (add_causal_flags, add_common, add_data_flags, apply_positional_data,
                                 config_from_args, flag, use_config)
from cpo_engine.settings import FitConfig


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("fit", help="fit the causal reward model (cross-fitted DML) and save it",
                       description="Embed queries and prompts, fit CausalRewardModel with folds grouped by "
                                   "query (the weight column as sample weights when present), print its "
                                   "diagnostics and save the model bundle (OUT/model), features and diagnostics.")
    use_config(p, FitConfig)
    add_data_flags(p)
    flag(p, "out")
    add_causal_flags(p)
    flag(p, "causal.backend")
    flag(p, "seed")
    flag(p, "keep_residuals", action="store_const", const=True)
    add_common(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from cpo_engine.workflows.fit import fit

    apply_positional_data(args)
    result = fit(config_from_args(args, FitConfig))
    print(result.model.diagnostics_.summary())
    print(f"saved model bundle to {result.bundle}")
    return 0
