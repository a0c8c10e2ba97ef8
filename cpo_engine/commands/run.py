"""`cpo run`: the end-to-end job on the bundled example or your own data."""

from __future__ import annotations

import argparse

from cpo_engine.commands import (add_beam_flags, add_causal_flags, add_common, add_data_flags, add_selection_flags,
                                 add_tracking_flags, config_from_args, flag, use_config)
from cpo_engine.settings import RunConfig
from cpo_engine.commands.verify import add_verify_flags
from cpo_engine.search.proposers import proposer_names


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("run", help="end-to-end job: data -> validation -> embeddings -> PCA -> causal model -> "
                                   "search -> report",
                       description="Run the whole pipeline and write a run folder with a manifest "
                                   "(config, versions, data hash, timings) and a model bundle (RUN/model). With no "
                                   "--data, runs the bundled example (real LLaMA-2 outcomes on svamp+mawps).")
    use_config(p, RunConfig)
    add_data_flags(p, positional=False)
    flag(p, "out")
    offline = proposer_names(needs_server=False)  # `cpo run` starts no LLM server for a proposer
    flag(p, "proposer.kind", name="--proposer", choices=offline)
    add_causal_flags(p)
    add_selection_flags(p)
    add_beam_flags(p)
    flag(p, "seed")
    add_verify_flags(p)
    add_tracking_flags(p)
    add_common(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from cpo_engine.workflows.run import run as run_workflow

    from cpo_engine.data.storage import is_remote

    cfg = config_from_args(args, RunConfig)
    result = run_workflow(cfg)
    where = cfg.out if is_remote(cfg.out) else result.run_dir
    print(f"run folder: {where}" + (f" (local copy: {result.run_dir})" if where != result.run_dir else ""))
    print("next: recommend a prompt for each of your new queries (a table of query_id, query_text):\n"
          f"  cpo assign --model {where} --queries NEW_QUERIES.parquet --out assignments.parquet")
    return 0
