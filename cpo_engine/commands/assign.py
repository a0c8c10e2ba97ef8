"""`cpo assign`: recommend a prompt for each of your unscored queries with a fitted run.

Takes a table of ``query_id, query_text`` only (Parquet file or folder, CSV/TSV, JSONL; a local path,
an NFS mount or a URI such as s3://bucket/queries/) and a `cpo run` / `cpo fit` folder, and writes one
row per query: the recommended prompt (id and text), where it comes from and whether an LLM ever ran
it (`verified`), its predicted effect on the score versus the static prompt with a 95% interval, and
why it departs from the static prompt when it does. Streams in batches, reusing the embedding cache;
``--executor ray`` runs it as a Ray Data job (embedding on GPU actors when the cluster has GPUs).
"""

from __future__ import annotations

import argparse

from cpo_engine.commands import add_common, config_from_args, flag


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("assign", help="recommend a prompt for each new, unscored query with a fitted run",
                       description=__doc__.split("\n\n")[0] + " " + __doc__.split("\n\n")[1].replace("\n", " "))
    flag(p, "--model", "model", "the `cpo run` / `cpo fit` folder (or its model/ bundle)")
    flag(p, "--queries", "queries", "table of query_id, query_text (other columns are ignored)")
    flag(p, "--out", "out", "output: FILE.parquet|.csv|.jsonl, or a folder of Parquet parts (a rerun resumes) "
                            "(default: <queries>.assignment.parquet)")
    flag(p, "--candidates", "policy.candidates",
         "logged: only prompts an LLM ran (verified); searched: also the run's searched candidates (unverified)",
         choices=["logged", "searched"])
    flag(p, "--no-fallback", "policy.fallback",
         "keep the per-query choice even when the run's data are too small or noisy to trust it (it still warns)",
         action="store_const", const=False)
    flag(p, "--batch-size", "batch_size", "queries embedded and scored per batch", type=int)
    flag(p, "--executor", "executor", "local: stream in this process; ray: Ray Data over an actor pool",
         choices=["local", "ray"])
    flag(p, "--num-actors", "ray.num_actors", "Ray actors (executor ray)", type=int)
    flag(p, "--gpus-per-actor", "ray.gpus_per_actor", "GPUs per Ray actor (default: 1 when the cluster has GPUs)",
         type=float)
    flag(p, "--device", "device", "scoring device: auto, cpu, cuda (the encoder's: --set embed.device=...)")
    flag(p, "--overwrite", "overwrite", "replace an existing output", action="store_const", const=True)
    add_common(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from cpo_engine.workflows.assign import assign
    from cpo_engine.workflows.config import AssignConfig

    result = assign(config_from_args(args, AssignConfig))
    print(result.describe())
    return 0


__all__ = ["register", "run"]
