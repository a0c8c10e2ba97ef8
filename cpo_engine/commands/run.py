"""`cpo run`: the end-to-end job on the bundled example or your own data."""

from __future__ import annotations

import argparse

from cpo_engine.commands import add_common, config_from_args


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("run", help="end-to-end job: data -> validation -> embeddings -> PCA -> causal model -> "
                                   "search -> report",
                       description="Run the whole pipeline and write a run folder with a manifest "
                                   "(config, versions, data hash, timings). With no --data, runs the bundled "
                                   "example (real LLaMA-2 outcomes on svamp+mawps, 16 prompts).")
    p.add_argument("--data", help="triplet table (default: the bundled example)")
    p.add_argument("--out", help="run folder (default: runs/<timestamp>)")
    add_common(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from cpo_engine.pipeline import run_job

    cfg = config_from_args(args)
    if args.out:
        cfg.out = args.out
    result = run_job(cfg)
    print(f"run folder: {result['run_dir']}")
    return 0
