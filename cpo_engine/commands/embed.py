"""`cpo embed`: embed queries and prompts through the cache, fit the two PCAs, write features."""

from __future__ import annotations

import argparse

from cpo_engine.commands import add_common, add_data_flags, apply_positional_data, config_from_args, flag, use_config
from cpo_engine.exceptions import ConfigError
from cpo_engine.settings import EmbedJobConfig


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("embed", help="embed queries and prompts, fit PCA (X for queries, T for prompts)",
                       description="Embed a triplet table's unique queries and prompts through the on-disk cache "
                                   "and fit a PCA for each; writes features and PCA states to --out.")
    use_config(p, EmbedJobConfig)
    add_data_flags(p)
    flag(p, "out")
    add_common(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    apply_positional_data(args)
    cfg = config_from_args(args, EmbedJobConfig)
    if cfg.out is None:
        raise ConfigError("cpo embed needs an output folder: pass --out DIR")
    from cpo_engine.data.storage import is_remote
    from cpo_engine.workflows.common import staged

    if is_remote(cfg.out):  # written in a local staging folder, uploaded when it ends (manifest last)
        return staged(cfg, embed)
    return embed(cfg)


def embed(cfg: EmbedJobConfig) -> int:
    """`cpo embed` into the local folder ``cfg.out``."""
    from cpo_engine.workflows.common import (Representer, load_data, now, refuse_other_kind, usable_folder,
                                             write_features, write_manifest)

    out = usable_folder(cfg.out)  # a file or an unwritable --out is refused before the embedding
    refuse_other_kind(out, "embed")
    started = now()
    table, info = load_data(cfg.data)
    reps = Representer(cfg.embed).represent(table, cfg.pca)
    write_manifest(out, "embed", cfg, write_features(reps, out), started_at=started, data=info)
    s = reps.summary()
    cache = s.get("cache", {})
    print(f"embedded {s['n_queries']:,} queries and {s['n_prompts']:,} prompts with {s['encoder']} "
          f"(cache: {cache.get('hits', 0)} hits, {cache.get('misses', 0)} misses)")
    print(f"PCA: X {s['query_components']} components ({s['query_explained_variance']:.1%} variance), "
          f"T {s['prompt_components']} components ({s['prompt_explained_variance']:.1%} variance) -> {out}")
    return 0
