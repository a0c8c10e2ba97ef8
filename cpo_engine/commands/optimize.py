"""`cpo optimize`: prompt search with a saved model bundle on your own queries and prompts.

Reads a triplet table (its queries are the ones to optimize for, its prompts the pool and the
seeds) and a model bundle (`cpo fit --out D` writes D/model; `cpo run --out R` writes R/model; either
folder works), and writes a per-query prompt assignment, the best static prompt, every candidate
with lineage and predicted uplift, and the search trace. Scoring needs no LLM call; only the LLM
proposer (``--proposer llm``) calls one, through any OpenAI-compatible server.
"""

from __future__ import annotations

import argparse

from cpo_engine.commands import (add_beam_flags, add_common, add_data_flags, add_selection_flags,
                                 add_tracking_flags, apply_positional_data, config_from_args, flag, use_config)
from cpo_engine.settings import OptimizeConfig
from cpo_engine.commands.verify import add_verify_flags


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("optimize", help="search prompts with a saved causal model (pool and/or generative)",
                       description=__doc__.split("\n\n")[0])
    use_config(p, OptimizeConfig)
    add_data_flags(p)
    flag(p, "model")
    flag(p, "out")
    flag(p, "mode")
    flag(p, "proposer.kind", name="--proposer")
    flag(p, "proposer.llm_base_url")
    flag(p, "proposer.llm_model")
    add_selection_flags(p)
    add_beam_flags(p)
    flag(p, "device")
    flag(p, "seed")
    add_verify_flags(p)
    add_tracking_flags(p)
    add_common(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from cpo_engine.causal.policy_values import format_policy_values
    from cpo_engine.workflows.optimize import optimize

    apply_positional_data(args)
    result = optimize(config_from_args(args, OptimizeConfig))
    values = result.best["policy_values"]
    print(f"policy values: not estimated ({values['skipped']})" if "skipped" in values
          else "\n".join(format_policy_values(values)))
    if result.search is not None:
        s = result.best["search_static"]
        print(f"searched {len(result.search.candidates)} candidates; best static: {s['text']!r} "
              f"(predicted uplift vs '{result.best['pool_static']['prompt_id']}' {s['uplift_vs_best_logged']:+.4f})")
    src = result.assignment.column("source").to_pylist()
    print(f"recommended a prompt for {len(src)} queries ({src.count('searched')} of them a searched, unverified one)")
    print(f"wrote {result.out}/assignment.parquet, best_static_prompt.json"
          + (", candidates.parquet, search_trace.json" if result.search is not None else ""))
    return 0
