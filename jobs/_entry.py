"""Shared plumbing of the entrypoints: one CLI subcommand's parser, its function, exit 0 or 1."""

from __future__ import annotations

import argparse
import importlib
import logging
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
    """Parse ``argv`` with the ``cpo NAME`` parser and run it; exit 0, or 1 with one message for an error
    the user can fix (bad input, a path, a busy folder) and with a traceback for a bug."""
    from cpo_engine.commands._errors import run_guarded
    from cpo_engine.utils import process_defaults

    process_defaults()
    sub = argparse.ArgumentParser().add_subparsers(dest="command")
    parser = importlib.import_module(f"cpo_engine.commands.{name}").register(sub)
    parser.prog = f"python -m jobs.{name}"
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def call() -> int:
        attach_to_cluster()
        return 0 if int(args.func(args) or 0) == 0 else 1

    # A Ray job exits 0 or 1 (retries belong to the scheduler): user errors print one message, bugs a traceback.
    return 0 if run_guarded(f"jobs.{name}", call, args, user_exit=1) == 0 else 1
