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

from cpo_engine.commands import add_common, config_from_args, flag, use_config
from cpo_engine.settings import AssignConfig


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("assign", help="recommend a prompt for each new, unscored query with a fitted run",
                       description=__doc__.split("\n\n")[0] + " " + __doc__.split("\n\n")[1].replace("\n", " "))
    use_config(p, AssignConfig)
    flag(p, "model")
    flag(p, "queries")
    flag(p, "columns", type=str)
    flag(p, "out")
    flag(p, "policy.candidates")
    flag(p, "policy.fallback", name="--no-fallback", action="store_const", const=False)
    flag(p, "batch_size")
    flag(p, "executor")
    flag(p, "ray.num_actors")
    flag(p, "ray.gpus_per_actor")
    flag(p, "device")
    flag(p, "overwrite", action="store_const", const=True)
    add_common(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from cpo_engine.workflows.assign import assign

    result = assign(config_from_args(args, AssignConfig))
    print(result.describe())
    return 0


__all__ = ["register", "run"]
