"""Shared plumbing of the entrypoints: one CLI subcommand's parser and function, and the exit codes of
the `cpo` CLI: 0 done, 2 a problem the user can fix (bad data, config, path: one message, no
traceback), 1 an unexpected failure (traceback), 130 interrupted. Ray marks any non-zero exit FAILED;
`ray job logs` shows the message."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence


def attach_to_cluster() -> None:
    """Inside a Ray job (RAY_ADDRESS set) attach now, so Ray stages and fold tasks use the cluster."""
    if os.environ.get("RAY_ADDRESS"):
        import ray

        if not ray.is_initialized():
            ray.init(log_to_driver=True)


def run_command(name: str, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` with the ``cpo NAME`` parser and run it; CPOError -> message and exit 2."""
    from cpo_engine.cli import add_console_flags, setup_console
    from cpo_engine.exceptions import CPOError
    from cpo_engine.utils import process_defaults

    process_defaults()
    sub = argparse.ArgumentParser().add_subparsers(dest="command")
    parser = importlib.import_module(f"cpo_engine.commands.{name}").register(sub)
    add_console_flags(parser, default_level="INFO", default_quiet=False)
    parser.prog = f"python -m jobs.{name}"
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    setup_console(args.log_level, args.quiet)
    try:
        attach_to_cluster()
        return int(args.func(args) or 0)
    except CPOError as exc:
        print(f"jobs.{name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"jobs.{name}: interrupted; resubmit the same job to resume", file=sys.stderr)
        return 130
