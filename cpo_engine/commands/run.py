"""`cpo run`: the end-to-end job on the bundled example or your own data."""

from __future__ import annotations

import argparse

from cpo_engine.commands import (add_beam_flags, add_causal_flags, add_common, add_data_flags, add_selection_flags,
                                 config_from_args, flag)
from cpo_engine.commands.verify import add_verify_flags
from cpo_engine.search.proposers import proposer_help, proposer_names


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("run", help="end-to-end job: data -> validation -> embeddings -> PCA -> causal model -> "
                                   "search -> report",
                       description="Run the whole pipeline and write a run folder with a manifest "
                                   "(config, versions, data hash, timings) and a model bundle (RUN/model). With no "
                                   "--data, runs the bundled example (real LLaMA-2 outcomes on svamp+mawps).")
    add_data_flags(p, positional=False)
    flag(p, "--out", "out", "run folder (default: runs/<timestamp>)")
    offline = proposer_names(needs_server=False)  # `cpo run` starts no LLM server for a proposer
    flag(p, "--proposer", "proposer.kind", f"where new prompts come from. {proposer_help(offline)}", choices=offline)
    add_causal_flags(p)
    add_selection_flags(p)
    add_beam_flags(p)
    flag(p, "--seed", "seed", "seed of every random step", type=int)
    add_verify_flags(p)
    add_common(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from cpo_engine.workflows import RunConfig
    from cpo_engine.workflows.run import run as run_workflow

    result = run_workflow(config_from_args(args, RunConfig))
    print(f"run folder: {result.run_dir}")
    print("next: recommend a prompt for each of your new queries (a table of query_id, query_text):\n"
          f"  cpo assign --model {result.run_dir} --queries NEW_QUERIES.parquet --out assignments.parquet")
    return 0
