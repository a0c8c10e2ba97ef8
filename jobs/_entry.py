"""Shared plumbing of the entrypoints: one CLI subcommand's parser and function, and the exit codes of
the `cpo` CLI: 0 done, 2 a problem the user can fix (bad data, config, path: one message, no
traceback), 1 an unexpected failure (traceback), 130 interrupted. Ray marks any non-zero exit FAILED;
`ray job logs` shows the message."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path
from typing import Sequence


def attach_to_cluster() -> None:
    """Inside a Ray job (RAY_ADDRESS set) attach now, so Ray stages and fold tasks use the cluster."""
    if os.environ.get("RAY_ADDRESS"):
        import ray

        if not ray.is_initialized():
            ray.init(log_to_driver=True)


def in_ray_working_dir(cwd: Path | None = None) -> bool:
    """True inside a Ray job's unpacked ``--working-dir`` (Ray deletes it when the job ends)."""
    return "runtime_resources" in (cwd or Path.cwd()).parts


def warn_lost_paths(argv: Sequence[str], cwd: Path | None = None, embeds: bool = True) -> list[str]:
    """Inside a Ray job's working dir, warn about outputs that would vanish with it: relative --out /
    --state paths and (for commands that embed) a relative embedding cache. Returns the warnings."""
    if not in_ray_working_dir(cwd):
        return []
    argv, out = list(argv), []
    for i, a in enumerate(argv):
        flag, _, inline = a.partition("=")
        value = inline or (argv[i + 1] if i + 1 < len(argv) else "")
        if flag in ("--out", "--state") and value and not _durable(value):
            out.append(f"{flag} {value} is relative to this job's temporary working dir, which Ray deletes when the "
                       "job ends: pass an absolute path on shared storage or a URI (docs/ray_jobs.md)")
    caches = [a.split("embed.cache_dir=", 1)[1] for a in argv if "embed.cache_dir=" in a]
    if embeds and (not caches or not (_durable(caches[-1]) or caches[-1] in ("null", "None"))):
        out.append("the embedding cache is relative to this job's temporary working dir and is lost when the job "
                   "ends (unless --config sets it elsewhere): pass --set embed.cache_dir=/shared/path or a URI "
                   "such as s3://bucket/cpo_cache")
    for w in out:
        logging.getLogger("jobs").warning(w)
    return out


def _durable(path: str) -> bool:
    return Path(path).is_absolute() or "://" in path


def run_command(name: str, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` with the ``cpo NAME`` parser and run it with the CLI's exit codes (0 done, 2 a problem
    the user can fix: one message, no traceback; 1 a bug: traceback; 130 interrupted)."""
    from cpo_engine.cli import add_console_flags, setup_console
    from cpo_engine.commands._errors import run_guarded
    from cpo_engine.utils import process_defaults

    process_defaults()
    sub = argparse.ArgumentParser().add_subparsers(dest="command")
    parser = importlib.import_module(f"cpo_engine.commands.{name}").register(sub)
    add_console_flags(parser, default_level="INFO", default_quiet=False)
    parser.prog = f"python -m jobs.{name}"
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    setup_console(args.log_level, args.quiet)
    warn_lost_paths(sys.argv[1:] if argv is None else argv, embeds=name != "generate")

    def call() -> int:
        attach_to_cluster()
        return int(args.func(args) or 0)

    return run_guarded(f"jobs.{name}", call, args)
