"""CLI subcommands: each module has `register(subparsers)`, which adds a parser whose `func(args)`
returns the exit code."""

from __future__ import annotations

import argparse


def add_common(parser: argparse.ArgumentParser) -> None:
    """--config FILE and --set section.key=value, shared by every subcommand that takes a config."""
    parser.add_argument("--config", metavar="FILE", help="YAML or JSON config file (see README: Configuration)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value, e.g. --set embed.batch_size=32 (repeatable)")


def config_from_args(args: argparse.Namespace):
    """The run config from --config/--set, with a positional or --data table path applied."""
    from cpo_engine.config import load_config

    cfg = load_config(args.config, args.overrides)
    if getattr(args, "data", None):
        cfg.data.path = args.data
    return cfg


def flag_overrides(args: argparse.Namespace, flag_keys: dict[str, str]) -> list[str]:
    """`--set` overrides followed by one `key=value` per flag given on the command line (flags win)."""
    import json

    overrides = list(getattr(args, "overrides", []) or [])
    for flag, key in flag_keys.items():
        value = getattr(args, flag, None)
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")
    return overrides
