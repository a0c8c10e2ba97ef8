"""CLI subcommands: each module has `register(subparsers)`, which adds a parser whose `func(args)`
returns the exit code. A command only turns flags into a workflow config and calls one workflow."""

from __future__ import annotations

import argparse
import json
from typing import Any

PRECEDENCE = ("Configuration precedence: defaults < --config FILE < --set SECTION.KEY=VALUE < flags; every flag "
              "is sugar for the --set key shown in its help.")


def add_common(parser: argparse.ArgumentParser) -> None:
    """--config FILE and --set section.key=value, shared by every subcommand that takes a config."""
    parser.add_argument("--config", metavar="FILE", help="YAML or JSON config file (see README: Configuration)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value, e.g. --set embed.batch_size=32 (repeatable)")
    parser.epilog = PRECEDENCE


def flag(parser: argparse.ArgumentParser, name: str, key: str, help: str, **kwargs: Any) -> None:
    """Add ``--name`` as sugar for ``--set key=VALUE`` (default None: unset flags leave the config alone)."""
    parser.add_argument(name, default=None, help=f"{help} [--set {key}]", **kwargs)
    keys = getattr(parser, "_cpo_flag_keys", {})
    keys[name.lstrip("-").replace("-", "_")] = key
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


def config_from_args(args: argparse.Namespace, cls: type) -> Any:
    """The workflow config ``cls`` from its defaults, --config, --set and the flags, in that precedence."""
    from cpo_engine.config import load_config

    return load_config(cls, getattr(args, "config", None), flag_overrides(args))


def add_data_flags(p: argparse.ArgumentParser, positional: bool = True) -> None:
    """DATA (positional, optional) and --data: the triplet table (default: the bundled example)."""
    if positional:
        p.add_argument("data_pos", nargs="?", metavar="DATA", help="triplet table (same as --data)")
    flag(p, "--data", "data.path", "triplet table: Parquet file or folder, CSV/TSV, JSONL (default: bundled example)")


def apply_positional_data(args: argparse.Namespace) -> None:
    if getattr(args, "data_pos", None) and getattr(args, "data", None) is None:
        args.data = args.data_pos


def add_causal_flags(p: argparse.ArgumentParser) -> None:
    """Flags of the causal model (the `causal` section), shared by fit, run, evaluate and nightly."""
    flag(p, "--featurizer", "causal.featurizer", "phi(X) of theta(X) = B^T phi(X): constant, linear, poly2",
         choices=["constant", "linear", "poly2"])
    flag(p, "--model-y", "causal.model_y", "nuisance for E[Y|X]: ridge, mlp, hgb, lgbm, cuml_ridge")
    flag(p, "--model-t", "causal.model_t", "nuisance for E[T|X]: ridge, mlp, hgb, lgbm, cuml_ridge")
    flag(p, "--cv", "causal.cv", "cross-fitting folds, grouped by query", type=int)
    flag(p, "--final-alpha", "causal.final_alpha",
         "penalty on effect heterogeneity: a number >= 0 (0: OLS, econml's LinearDML) or 'cv'", type=_alpha)


def add_selection_flags(p: argparse.ArgumentParser) -> None:
    """Flags of the selection rule (the `selection` section)."""
    from cpo_engine.search.config import SelectionConfig

    flag(p, "--z", "selection.z", f"lower-confidence-bound multiplier (default {SelectionConfig.z:g}; 0: point "
         "estimate)", type=float)
    flag(p, "--reference", "selection.reference", "measure effects from the incumbent prompt or the mean prompt",
         choices=["incumbent", "mean"])
    flag(p, "--trust-region", "selection.trust_region", "candidates beyond the logged prompts' support",
         choices=["exclude", "penalize", "off"])
    flag(p, "--length-penalty", "selection.length_penalty", "objective lost per 100 words", type=float)


def add_beam_flags(p: argparse.ArgumentParser) -> None:
    """Flags of the beam search (the `beam` and `proposer` sections)."""
    flag(p, "--rounds", "beam.rounds", "beam-search rounds", type=int)
    flag(p, "--beam-width", "beam.beam_width", "beams kept by static objective each round", type=int)
    flag(p, "--query-beams", "beam.query_beams", "extra beams: candidates that win the most queries", type=int)
    flag(p, "--children", "beam.children_per_beam", "children per beam per round", type=int)
    flag(p, "--top-k", "beam.top_k", "candidates kept per query", type=int)
    flag(p, "--edit-prior", "proposer.edit_prior", "edit-prior JSON ('auto': the packaged one)")
    flag(p, "--task", "proposer.task", "task whose edit-prior weights apply")


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
