"""The `cpo` command line: one subcommand per stage."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys

from cpo_engine import __version__

COMMANDS = ("validate", "embed", "run", "fit", "evaluate", "optimize", "generate", "nightly", "edits")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cpo", description="cpo_engine: Causal Prompt Optimization at batch scale.")
    parser.add_argument("--version", action="version", version=f"cpo_engine {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="logging verbosity (default INFO)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        if importlib.util.find_spec(f"cpo_engine.commands.{name}") is not None:
            importlib.import_module(f"cpo_engine.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from cpo_engine.utils import process_defaults

    process_defaults()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    from cpo_engine.commands._errors import run_guarded

    # User errors (CPOError, OSError on a path) -> message + exit 2; anything else is a bug: traceback, exit 1.
    return run_guarded(f"cpo {args.command}", lambda: args.func(args), args)


if __name__ == "__main__":
    sys.exit(main())
