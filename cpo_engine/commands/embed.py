"""`cpo embed`: embed queries and prompts through the cache, fit the two PCAs, write features."""

from __future__ import annotations

import argparse
from pathlib import Path

from cpo_engine.commands import add_common, config_from_args


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("embed", help="embed queries and prompts, fit PCA (X for queries, T for prompts)",
                       description="Embed a triplet table's unique queries and prompts through the on-disk cache "
                                   "and fit a PCA for each; writes features and PCA states to --out.")
    p.add_argument("data", nargs="?", help="triplet table (default: the bundled example)")
    p.add_argument("--out", required=True, help="folder for query/prompt features and PCA states")
    add_common(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from cpo_engine.pipeline import embed_stage, load_data

    cfg = config_from_args(args)
    table, _ = load_data(cfg.data)
    reps = embed_stage(table, cfg, show_progress=True)
    out = Path(args.out)
    from cpo_engine.pipeline import write_features

    write_features(reps, out)
    s = reps.summary()
    cache = s.get("cache", {})
    print(f"embedded {s['n_queries']:,} queries and {s['n_prompts']:,} prompts with {s['encoder']} "
          f"(cache: {cache.get('hits', 0)} hits, {cache.get('misses', 0)} misses)")
    print(f"PCA: X {s['query_components']} components ({s['query_explained_variance']:.1%} variance), "
          f"T {s['prompt_components']} components ({s['prompt_explained_variance']:.1%} variance) -> {out}")
    return 0
