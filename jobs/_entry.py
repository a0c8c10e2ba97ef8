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
    """Parse ``argv`` with the ``cpo NAME`` parser and run it; CPOError -> message and exit 1."""
    from cpo_engine.exceptions import CPOError
    from cpo_engine.utils import process_defaults

    process_defaults()
    sub = argparse.ArgumentParser().add_subparsers(dest="command")
    parser = importlib.import_module(f"cpo_engine.commands.{name}").register(sub)
    parser.prog = f"python -m jobs.{name}"
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        attach_to_cluster()
        return 0 if int(args.func(args) or 0) == 0 else 1
    except CPOError as exc:
        print(f"jobs.{name}: error: {exc}", file=sys.stderr)
        return 1
