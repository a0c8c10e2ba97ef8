"""How the `cpo` CLI and the Ray Jobs entrypoints end: one handler for every command.

An error the user can fix ends in one message and exit code 2 (the `cpo` CLI and the Ray Jobs
entrypoints share one convention), never a traceback: every :class:`~cpo_engine.exceptions.CPOError`
(bad data, config, a busy folder, a dead LLM server ...) and every ``OSError`` (a path that is a file, missing, read-only, a
full disk), whose message names the path, the flag that gave it when one did, and a fix.
Anything else is a bug of cpo_engine: it is shown with its traceback, says so, and exits 1, so a
genuine defect is never dressed up as a user mistake.
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

from cpo_engine.exceptions import CPOError

log = logging.getLogger("cpo_engine")

EXIT_BUG = 1
EXIT_INTERRUPTED = 130
BUG_NOTE = ("this is a bug in cpo_engine, not a problem with your input: please report it with the traceback "
            "above and the command you ran")

_OS_FIXES: tuple[tuple[type, str], ...] = (
    (FileExistsError, "it exists and is not a folder: pass a folder path (e.g. --out runs/mine) or remove the file"),
    (NotADirectoryError, "a part of this path is a file, not a folder: pass a path whose parents are folders"),
    (IsADirectoryError, "it is a folder where a file was expected: pass a file path"),
    (FileNotFoundError, "check the path (relative paths start from the current folder)"),
    (PermissionError, "you cannot write or read there: choose a folder you own (e.g. --out runs/mine) or fix its "
                      "permissions"),
)
_ERRNO_FIXES = {
    errno.ENOSPC: "the disk is full: free space or write elsewhere, then rerun the same command (it resumes)",
    errno.EROFS: "the file system is read-only: write elsewhere (e.g. --out runs/mine)",
    errno.EDQUOT: "the disk quota is exceeded: free space or write elsewhere, then rerun the same command",
    errno.ENAMETOOLONG: "the path is too long: use a shorter one",
}


def user_message(exc: BaseException, args: argparse.Namespace | None = None) -> str | None:
    """The message of an error the user can fix, or None when ``exc`` is a bug of cpo_engine."""
    if isinstance(exc, CPOError):
        return str(exc)
    if isinstance(exc, OSError):
        return os_message(exc, args)
    return None


def os_message(exc: OSError, args: argparse.Namespace | None = None) -> str:
    """``exc`` as "PATH (given by --flag): what happened\\n  fix: ..."."""
    path = exc.filename
    what = exc.strerror or type(exc).__name__
    fix = _ERRNO_FIXES.get(exc.errno or -1) or next((f for cls, f in _OS_FIXES if isinstance(exc, cls)), None)
    if path is None:
        return f"{what} ({exc})" + (f"\n  fix: {fix}" if fix else "")
    flag = flag_of(path, args)
    where = f"{path}" + (f" (from {flag})" if flag else "")
    also = f" and {exc.filename2}" if exc.filename2 else ""
    return f"{where}{also}: {what}" + (f"\n  fix: {fix}" if fix else "")


def flag_of(path: Any, args: argparse.Namespace | None) -> str | None:
    """The command-line flag whose value is ``path`` or a folder above it (None when no flag gave it)."""
    if args is None:
        return None
    try:
        target = Path(str(path)).resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    for name, value in sorted(vars(args).items()):
        if not isinstance(value, str) or not value or name.startswith("_") or name in ("command",):
            continue
        try:
            given = Path(value).resolve()
        except (OSError, RuntimeError, ValueError):
            continue
        if given == target or given in target.parents:
            return "DATA" if name == "data_pos" else "--" + name.replace("_", "-")
    for override in getattr(args, "overrides", None) or []:
        key, _, value = str(override).partition("=")
        if value and Path(value.strip('"')).resolve() in (target, *target.parents):
            return f"--set {key}"
    return None


def run_guarded(prog: str, fn: Callable[[], Any], args: argparse.Namespace | None = None, *,
                user_exit: int = 2) -> int:
    """Run ``fn`` and turn its outcome into an exit code (see the module docstring)."""
    try:
        return int(fn() or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the one place every error of a command ends
        message = user_message(exc, args)
        if message is None:
            traceback.print_exc()
            print(f"{prog}: internal error: {type(exc).__name__}: {exc}\n  {BUG_NOTE}", file=sys.stderr)
            return EXIT_BUG
        log.debug("%s failed", prog, exc_info=True)  # --log-level DEBUG shows where
        print(f"{prog}: error: {message}", file=sys.stderr)
        return user_exit


__all__ = ["run_guarded", "user_message", "os_message", "flag_of", "EXIT_BUG", "EXIT_INTERRUPTED", "BUG_NOTE"]
