"""What a nightly state folder serves: its ``live.json``, the record `cpo nightly` writes when a prompt or a
per-query policy goes live on measured evidence.

``live.json`` names the run whose model bundle serves (``run``, relative to the state folder) and how:
``kind: static`` (one prompt for every query: ``id``, ``text``) or ``kind: per_query`` (the run's own
policy, ``model/policy.json``). It also keeps the evidence that put it live (``evidence``: estimator,
rows, values, interval, against what; or ``measured_uplift`` from LLM verification).
:meth:`cpo_engine.policy.Policy.load` and ``cpo assign --model STATE`` resolve a state folder through
:func:`live_run`; a run folder (``STATE/runs/<date>``) serves its own policy. A state on an object store
(``s3://``, ``gs://``) is read through a local copy of its live.json and live model (:func:`fetch_state`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cpo_engine.exceptions import ConfigError, DataError

LIVE_FILE = "live.json"
#: the files that mark a nightly state folder
STATE_MARKERS = ("current.json", LIVE_FILE)
KINDS = ("static", "per_query")


@dataclass
class LiveRun:
    """A nightly state folder's live record, with the run folder it names."""

    state: Path
    run: Path
    record: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.record["kind"])


def is_state_folder(path: str | Path) -> bool:
    """True for a `cpo nightly` state folder (it holds current.json or live.json)."""
    p = Path(path)
    return any((p / m).is_file() for m in STATE_MARKERS)


def live_run(path: str | Path, shown: str | None = None) -> LiveRun | None:
    """The live record of the nightly state folder ``path`` (None when ``path`` is not a state folder); a state
    with nothing live yet, or a record naming a missing run, is an error naming the file and the fix. ``shown``:
    the name errors give the state (its URI, when ``path`` is a local copy made by :func:`fetch_state`)."""
    p = Path(path)
    if not is_state_folder(p):
        return None
    name = shown or str(p)
    f = p / LIVE_FILE
    if not f.is_file():
        run = _current_run(p)
        alt = f"--model {name}/{run}" if run else f"--model {name}/runs/<date>"
        raise ConfigError(f"{name} is a nightly state folder, but nothing is live yet (no {LIVE_FILE}): no night has "
                          "promoted a prompt or per-query policy on measured evidence\n  fix: serve one night's own "
                          f"policy with {alt}, or read promotion.reason in the last night's report.json for why "
                          "nothing went live")
    record = _read(f, f"{name}/{LIVE_FILE}")
    run = p / record["run"]
    if not (run / "model" / "bundle.json").is_file():
        shown_run = f"{name}/{record['run']}"
        raise DataError(f"the live run it names, {shown_run}, holds no model bundle", source=f"{name}/{LIVE_FILE}",
                        fix=f"restore {shown_run} from a backup, or delete {LIVE_FILE} (nothing is then served from the state "
                            "until the next promotion)")
    return LiveRun(p, run, record)


def _read(f: Path, source: str) -> dict[str, Any]:
    fix = f"restore {f.name} from a backup, or delete it (the next night that measures a win writes it again)"
    try:
        record = json.loads(f.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"not valid JSON ({exc})", source=source, fix=fix) from None
    if not isinstance(record, dict) or record.get("kind") not in KINDS or not isinstance(record.get("run"), str):
        raise DataError(f"not a live record: needs \"kind\" ({' or '.join(KINDS)}) and \"run\"", source=source, fix=fix)
    if record["kind"] == "static" and not (isinstance(record.get("id"), str) and isinstance(record.get("text"), str)):
        raise DataError("a static live record needs the prompt's \"id\" and \"text\"", source=source, fix=fix)
    return record


def fetch_state(uri: str | Path) -> Path | None:
    """A local copy of what the nightly state at ``uri`` (``s3://``, ``gs://``) serves: its live.json and
    current.json and the model bundle of the run live.json names (None when ``uri`` holds neither file: it is not a
    state). :func:`live_run` then reads it as it reads a local state folder."""
    import tempfile

    import pyarrow.fs as pafs

    from cpo_engine.data.storage import download, location

    fs, root = location(uri)
    root = root.rstrip("/")
    infos = fs.get_file_info([f"{root}/{m}" for m in STATE_MARKERS])
    present = [m for m, info in zip(STATE_MARKERS, infos) if info.type == pafs.FileType.File]
    if not present:
        return None
    dst = Path(tempfile.mkdtemp(prefix="cpo_state_"))
    for m in present:
        download(fs, f"{root}/{m}", dst / m, folder=False)
    try:
        run = json.loads((dst / LIVE_FILE).read_text()).get("run")
    except (OSError, ValueError, AttributeError):
        run = None  # live_run says what is wrong with live.json
    if isinstance(run, str) and ".." not in run.split("/") and fs.get_file_info(
            f"{root}/{run}/model/bundle.json").type == pafs.FileType.File:
        download(fs, f"{root}/{run}/model", dst / run / "model")
    return dst


def _current_run(state: Path) -> str | None:
    try:
        run = json.loads((state / "current.json").read_text()).get("run")
    except (OSError, ValueError, AttributeError):
        return None
    return run if isinstance(run, str) else None


__all__ = ["LIVE_FILE", "LiveRun", "is_state_folder", "live_run", "fetch_state"]
