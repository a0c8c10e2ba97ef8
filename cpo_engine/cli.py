"""The `cpo` command line: one subcommand per stage."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import warnings

from cpo_engine import __version__

COMMANDS = ("validate", "embed", "run", "fit", "evaluate", "ope", "optimize", "assign", "verify", "generate",
            "nightly", "loop", "edits")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cpo", description="cpo_engine: Causal Prompt Optimization at batch scale.")
    parser.add_argument("--version", action="version", version=f"cpo_engine {__version__}")
    add_console_flags(parser, default_level="INFO", default_quiet=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        if importlib.util.find_spec(f"cpo_engine.commands.{name}") is not None:
            # accepted after the subcommand too (`cpo run --quiet`); unset there, the global value stays
            add_console_flags(importlib.import_module(f"cpo_engine.commands.{name}").register(sub))
    return parser


def add_console_flags(parser: argparse.ArgumentParser, default_level: object = argparse.SUPPRESS,
                      default_quiet: object = argparse.SUPPRESS) -> None:
    """--log-level and -q/--quiet."""
    parser.add_argument("--log-level", default=default_level, type=str.upper,
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="verbosity of cpo_engine's log lines (default INFO; other libraries log WARNING and "
                             "above unless DEBUG)")
    parser.add_argument("-q", "--quiet", action="store_true", default=default_quiet,
                        help="print results, warnings and errors only: no progress bars or stage log lines")


def setup_console(level: str = "INFO", quiet: bool = False) -> None:
    """Logging (cpo_engine at ``level``, other libraries at WARNING), progress bars, and warnings printed
    as one readable line (``warning: CausalDiagnosticWarning: ...``) instead of a source listing."""
    from cpo_engine.utils import configure_logging

    configure_logging(level, quiet)

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001 (warnings' signature)
        print(f"warning: {category.__name__}: {message}", file=file or sys.stderr)

    warnings.showwarning = show


def main(argv: list[str] | None = None) -> int:
    from cpo_engine.utils import LEDGER, process_defaults

    process_defaults()
    LEDGER.reset()  # the cost ledger of this command (its manifests' "cost")
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_console(args.log_level, args.quiet)
    from cpo_engine.commands._errors import run_guarded

    # User errors (CPOError, OSError on a path) -> message + exit 2; anything else is a bug: traceback, exit 1.
    return run_guarded(f"cpo {args.command}", lambda: args.func(args), args)


if __name__ == "__main__":
    sys.exit(main())
