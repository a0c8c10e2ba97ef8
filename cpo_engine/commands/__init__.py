"""CLI subcommands: each module has `register(subparsers)`, which adds a parser whose `func(args)`
returns the exit code. A command only turns flags into a workflow config and calls one workflow."""

from __future__ import annotations

import argparse
import json
from typing import Any

from cpo_engine.commands._flags import add_flag

PRECEDENCE = ("Configuration precedence: defaults < --config FILE < --set SECTION.KEY=VALUE < flags; every flag "
              "is sugar for the --set key shown in its help.")


def add_common(parser: argparse.ArgumentParser) -> None:
    """--config FILE and --set section.key=value, shared by every subcommand that takes a config."""
    parser.add_argument("--config", metavar="FILE", help="YAML or JSON config file (see README: Configuration)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value, e.g. --set embed.batch_size=32 (repeatable)")
    parser.epilog = PRECEDENCE


def use_config(parser: argparse.ArgumentParser, cls: type) -> None:
    """The config dataclass of a subcommand: its flags are generated from it (`flag`) and parsed into it."""
    parser._cpo_config = cls  # type: ignore[attr-defined]
    parser.set_defaults(_cpo_config=cls)


def flag(parser: argparse.ArgumentParser, key: str, *legacy: str, name: str | None = None, **kwargs: Any) -> None:
    """Add the flag of config key ``key`` (``--<its last part>``, or ``name``), sugar for ``--set key=VALUE``:
    type, choices, help and the default it shows are read from the field of the parser's config class
    (`use_config`); unset, the flag leaves the config alone (default None)."""
    if key.startswith("-"):
        raise TypeError(f"flag(parser, {key!r}, {legacy[0] if legacy else '...'!r}, help): flags are "
                        f"flag(parser, 'section.key', name={key!r}); the help is the field's docstring (or "
                        "field(metadata={'help': ...})) in its config dataclass")
    cls = getattr(parser, "_cpo_config", None)
    if cls is None:
        raise TypeError(f"{parser.prog}: call use_config(parser, ConfigClass) before flag(parser, {key!r})")
    dest = add_flag(parser, cls, key, name, **kwargs)
    keys = getattr(parser, "_cpo_flag_keys", {})
    keys[dest] = key
    parser._cpo_flag_keys = keys  # type: ignore[attr-defined]
    parser.set_defaults(_cpo_flag_keys=keys)


def flag_overrides(args: argparse.Namespace, flag_keys: dict[str, str] | None = None) -> list[str]:
    """`--set` overrides followed by one `key=value` per flag given on the command line (flags win)."""
    overrides = list(getattr(args, "overrides", []) or [])
    for name, key in (flag_keys or getattr(args, "_cpo_flag_keys", {})).items():
        value = getattr(args, name, None)
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")
    return overrides


def config_from_args(args: argparse.Namespace, cls: type | None = None) -> Any:
    """The workflow config ``cls`` (default: the subcommand's, `use_config`) from its defaults, --config, --set and
    the flags, in that precedence."""
    from cpo_engine.config import load_config

    return load_config(cls or args._cpo_config, getattr(args, "config", None), flag_overrides(args))


def add_data_flags(p: argparse.ArgumentParser, positional: bool = True) -> None:
    """DATA (positional, optional) and --data: the triplet table (default: the bundled example)."""
    if positional:
        p.add_argument("data_pos", nargs="?", metavar="DATA", help="triplet table (same as --data)")
    flag(p, "data.path", name="--data")
    add_table_flags(p, "data.")


def add_table_flags(p: argparse.ArgumentParser, prefix: str = "") -> None:
    """--columns THEIRS=OURS,... and --score-field NAME (chat logs): how a table's columns are read, on every
    command that reads one (``prefix``: the config section holding ``columns`` and ``score_field``)."""
    flag(p, f"{prefix}columns", type=str)
    flag(p, f"{prefix}score_field")


def apply_positional_data(args: argparse.Namespace) -> None:
    if getattr(args, "data_pos", None) and getattr(args, "data", None) is None:
        args.data = args.data_pos


def add_tracking_flags(p: argparse.ArgumentParser) -> None:
    """--mlflow URI (the `tracking` section): the finished folder is also logged to MLflow (run, optimize, verify,
    nightly)."""
    flag(p, "tracking.mlflow_uri", name="--mlflow", metavar="URI")


def add_causal_flags(p: argparse.ArgumentParser) -> None:
    """Flags of the causal model (the `causal` section), shared by fit, run, evaluate and nightly."""
    flag(p, "causal.featurizer")
    flag(p, "causal.model_y")
    flag(p, "causal.model_t")
    flag(p, "causal.cv")
    flag(p, "causal.final_alpha", type=_alpha)


def add_selection_flags(p: argparse.ArgumentParser) -> None:
    """Flags of the selection rule (the `selection` section)."""
    flag(p, "selection.z")
    flag(p, "selection.reference")
    flag(p, "selection.trust_region")
    flag(p, "selection.length_penalty")


def add_beam_flags(p: argparse.ArgumentParser) -> None:
    """Flags of the beam search (the `beam` and `proposer` sections)."""
    flag(p, "beam.rounds")
    flag(p, "beam.beam_width")
    flag(p, "beam.query_beams")
    flag(p, "beam.children_per_beam", name="--children")
    flag(p, "beam.top_k")
    flag(p, "proposer.edit_prior")
    flag(p, "proposer.task")


def _alpha(text: str) -> "float | str":
    if text == "cv":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number >= 0 or 'cv', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value
