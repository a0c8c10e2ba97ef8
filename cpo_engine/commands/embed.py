"""`cpo embed`: embed queries and prompts through the cache, fit the two PCAs, write features."""

from __future__ import annotations

import argparse

from cpo_engine.commands import add_common, add_data_flags, apply_positional_data, config_from_args


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("embed", help="embed queries and prompts, fit PCA (X for queries, T for prompts)",
                       description="Embed a triplet table's unique queries and prompts through the on-disk cache "
                                   "and fit a PCA for each; writes features and PCA states to --out.")
    add_data_flags(p)
    p.add_argument("--out", required=True, help="folder for query/prompt features and PCA states")
    add_common(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from cpo_engine.workflows import FitConfig
    from cpo_engine.workflows.common import Representer, load_data, write_features

    apply_positional_data(args)
    cfg = config_from_args(args, FitConfig)
    from cpo_engine.workflows.common import usable_folder

    out = usable_folder(args.out)  # a file or an unwritable --out is refused before the embedding
    table, _ = load_data(cfg.data)
    reps = Representer(cfg.embed).represent(table, cfg.pca)
    write_features(reps, out)
    s = reps.summary()
    cache = s.get("cache", {})
    print(f"embedded {s['n_queries']:,} queries and {s['n_prompts']:,} prompts with {s['encoder']} "
          f"(cache: {cache.get('hits', 0)} hits, {cache.get('misses', 0)} misses)")
    print(f"PCA: X {s['query_components']} components ({s['query_explained_variance']:.1%} variance), "
          f"T {s['prompt_components']} components ({s['prompt_explained_variance']:.1%} variance) -> {out}")
    return 0
