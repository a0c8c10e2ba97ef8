"""The nightly state folder's shared pieces: where a night stages its state writes until it commits, and how a
state file is read. Used by :mod:`cpo_engine.workflows.nightly` and :mod:`cpo_engine.workflows.nightly_promote`
(so neither imports the other's helpers)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cpo_engine.exceptions import DataError

#: the folder of a run where its state writes wait (see :func:`cpo_engine.workflows.nightly.commit`)
STAGED = "staged"


def staged(run_dir: Path, dest: str) -> Path:
    """Where tonight writes the state file ``dest`` (relative to the state folder) until it commits."""
    return run_dir / STAGED / dest


def read_json(path: Path) -> dict[str, Any]:
    """A state file's JSON ({} when it does not exist); a damaged one is a DataError naming it and the fix."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"the nightly state file is not valid JSON ({exc})", source=str(path),
                        fix=f"restore {path.name} from a backup, or delete it to start that part of the state afresh "
                            "(current.json: the next night fits from scratch; live.json: nothing is served until a "
                            "measured win)") from None
    if not isinstance(data, dict):
        raise DataError("the nightly state file does not hold a JSON object", source=str(path),
                        fix=f"restore {path.name} from a backup, or delete it")
    return data


__all__ = ["STAGED", "read_json", "staged"]
