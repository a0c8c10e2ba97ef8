"""A nightly state on an object store (``cpo nightly --state s3://bucket/prefix``, ``gs://...``: any URI pyarrow.fs
reaches), worked on through a local mirror.

A night on a remote state takes the state's lock object (``<state>/LOCK``), finishes a commit a killed night left
(``<state>/commit.json``), pulls what the night reads into a local mirror (:func:`pull`: current.json, live.json, the
stored days of triplets, the live runs' outputs and tonight's run folders; the mirror is
:func:`cpo_engine.data.storage.staging_folder` of the URI; the embedding cache, ``<state>/cache`` on the store unless
``embed.cache_dir`` is set (:func:`cpo_engine.workflows.nightly.night_cache`), is neither pulled nor pushed), runs the night on the mirror exactly as on a local state, and pushes what it changed (:func:`push`):

1. each run folder the night wrote (``runs/<date>``, ``failed/<date>``), its manifest last; no pointer names it yet;
2. the state files the night changed (its day of triplets, the verified ones, ``live.json``, ``current.json``),
   uploaded beside the night's run, under ``<run>/staged/``;
3. ``commit.json``, the list of their moves with the pointers last: one PUT, the commit point;
4. each staged object copied to its place (``live.json``, then ``current.json`` last), then commit.json deleted.

Every object appears whole when its single PUT ends, so a night killed before step 3 leaves the remote state as it
was (the pointers only ever name fully uploaded runs), and one killed after it is completed by the next night
(:func:`recover`) before it pulls. The lock object is best effort: an object store without conditional writes cannot
make two writers' check-then-write atomic, so one scheduler per state is assumed (a Kubernetes CronJob with
``concurrencyPolicy: Forbid``); the lock is read back after it is written and again just before the commit point.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from cpo_engine.exceptions import BusyError, DataError
from cpo_engine.utils import atomic_write_bytes, put_bytes

log = logging.getLogger(__name__)

LOCK = "LOCK"
JOURNAL = "commit.json"
#: the pointer files, in the order they move (current.json, which names the live model, moves last)
POINTERS = ("live.json", "current.json")
#: seconds between two refreshes of a held lock object, and after which a lock nobody refreshed counts as dead
HEARTBEAT_S = 60.0
STALE_S = float(os.environ.get("CPO_STATE_LOCK_STALE_S", 900))
#: what a night's mirror keeps between nights (the embedding cache) and what is never pushed
LOCAL_ONLY = ("cache",)


def _fs(uri: str) -> tuple[Any, str]:
    from cpo_engine.data.storage import location

    fs, root = location(uri)
    return fs, root.rstrip("/")


def _read(fs: Any, path: str) -> bytes | None:
    import pyarrow.fs as pafs

    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        return f.read()


def _json(fs: Any, path: str) -> dict[str, Any]:
    raw = _read(fs, path)
    if raw is None:
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return {"unreadable": raw[:200].decode("utf-8", "replace")}
    return data if isinstance(data, dict) else {}


# ------------------------------------------------------------------------------------------- lock


class StateLock:
    """The lock object ``<state>/LOCK`` of a remote nightly state: owner token, host, pid and UTC times, refreshed
    every :data:`HEARTBEAT_S` seconds while held; a lock nobody refreshed for :data:`STALE_S` seconds
    (``$CPO_STATE_LOCK_STALE_S``) is taken over. Best effort (see the module docstring)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri.rstrip("/")
        self.fs, root = _fs(uri)
        self.path, self.lock_uri = f"{root}/{LOCK}", f"{self.uri}/{LOCK}"
        self.token = uuid.uuid4().hex
        self.acquired_at = _now()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self) -> dict[str, Any]:
        return {"owner": self.token, "host": socket.gethostname(), "pid": os.getpid(), "acquired_at": self.acquired_at,
                "heartbeat_at": _now(), "heartbeat_unix": time.time()}

    def held(self) -> dict[str, Any]:
        return _json(self.fs, self.path)

    def __enter__(self) -> "StateLock":
        other = self.held()
        if other and other.get("owner") != self.token:
            age = time.time() - float(other.get("heartbeat_unix") or 0)
            if age < STALE_S:
                raise BusyError(self._busy(other, age))
            log.warning("taking over the lock %s of owner %s (host %s, pid %s): no heartbeat for %.0f s > %.0f s",
                        self.lock_uri, other.get("owner"), other.get("host"), other.get("pid"), age, STALE_S)
        self._write()
        time.sleep(0.5)  # another writer that raced us has written by now: the read-back sees whose it is
        self.check()
        self._thread = threading.Thread(target=self._beat, name="cpo-state-lock", daemon=True)
        self._thread.start()
        return self

    def _write(self) -> None:
        from cpo_engine.data.storage import CREDENTIALS_HINT

        try:
            put_bytes(self.fs, self.path, json.dumps(self.record(), indent=2).encode())
        except OSError as exc:
            raise DataError(f"cannot write the nightly state's lock object ({str(exc).splitlines()[0]})",
                            source=self.lock_uri, fix=f"check the bucket and its write permission; {CREDENTIALS_HINT}"
                            ) from exc

    def check(self) -> None:
        """Raise a BusyError unless the lock object is still this night's (another writer took it over)."""
        other = self.held()
        if other.get("owner") != self.token:
            age = time.time() - float(other.get("heartbeat_unix") or 0) if other else 0.0
            raise BusyError(self._busy(other, age) if other else
                            f"the lock object {self.lock_uri} of the nightly state disappeared while this night held "
                            "it\n  fix: make sure one scheduler runs `cpo nightly` on this --state, then rerun")

    def _busy(self, other: dict[str, Any], age: float) -> str:
        return (f"the nightly state {self.uri} is locked by another `cpo nightly`: {self.lock_uri} names owner "
                f"{other.get('owner')} (host {other.get('host')}, pid {other.get('pid')}, since "
                f"{other.get('acquired_at')}, last heartbeat {age:.0f} s ago)\n  fix: wait for that night to finish; "
                f"if its process is dead, delete {self.lock_uri} (it is also taken over {STALE_S:.0f} s after its "
                "last heartbeat, $CPO_STATE_LOCK_STALE_S)")

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                if self.held().get("owner") != self.token:
                    log.error("the lock %s was taken over by another writer; this night will not commit", self.lock_uri)
                    return
                self._write()
            except Exception as exc:  # noqa: BLE001 - a missed heartbeat is retried; the commit checks the lock again
                log.warning("could not refresh the lock %s: %s", self.lock_uri, exc)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        try:
            if self.held().get("owner") == self.token:
                self.fs.delete_file(self.path)
        except OSError as err:
            log.warning("could not delete the lock %s (%s): delete it by hand", self.lock_uri, err)


# ---------------------------------------------------------------------------------- pull, push


def recover(uri: str) -> None:
    """Finish the commit a killed night left on the remote state (its ``commit.json``); call it holding the lock."""
    fs, root = _fs(uri)
    journal = _json(fs, f"{root}/{JOURNAL}")
    if not journal:
        return
    log.info("completing the commit a killed night left in %s/%s", uri, JOURNAL)
    _apply(fs, root, journal.get("moves") or [])


def _apply(fs: Any, root: str, moves: list[list[str]]) -> None:
    """Copy each staged object to its place, in order (pointers last), then drop the staged copies and the journal.
    Idempotent: a staged object already gone was moved by an earlier attempt."""
    import pyarrow.fs as pafs

    for src, dest in moves:
        if fs.get_file_info(f"{root}/{src}").type == pafs.FileType.File:
            fs.create_dir(f"{root}/{dest}".rsplit("/", 1)[0], recursive=True)
            fs.copy_file(f"{root}/{src}", f"{root}/{dest}")
    for src, _ in moves:
        if fs.get_file_info(f"{root}/{src}").type == pafs.FileType.File:
            fs.delete_file(f"{root}/{src}")
    fs.delete_file(f"{root}/{JOURNAL}")


def mirror_folder(uri: str) -> Path:
    """The local mirror of a remote state: ``$CPO_STAGING_DIR`` (or ``.cpo_cache/staging``)/scheme/bucket/key."""
    from cpo_engine.data.storage import staging_folder

    return staging_folder(uri)


def pull(uri: str, date: str) -> tuple[Path, dict[str, tuple[int, int]]]:
    """Refresh the local mirror of the remote state from the store (everything but its embedding cache is replaced)
    with what a night of ``date`` reads: current.json, live.json, the stored days of triplets, the live model run's
    compared outputs, the live run's model, and the run folders of ``date`` (``runs/<date>``, ``runs/<date>-N``).
    Returns the mirror and the signature of each file in it (what :func:`push` compares with)."""
    import pyarrow.fs as pafs

    fs, root = _fs(uri)
    local = mirror_folder(uri)
    local.mkdir(parents=True, exist_ok=True)
    for child in local.iterdir():
        if child.name not in LOCAL_ONLY and not child.name.startswith(".cpo"):
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    pointers = {name: _json(fs, f"{root}/{name}") for name in POINTERS}
    live_model = pointers["live.json"].get("run")
    current = pointers["current.json"].get("run")
    wanted = [f"{current}/assignment.parquet", f"{current}/prompts.parquet"] if isinstance(current, str) else []
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    for info in infos:
        rel = info.path[len(root):].lstrip("/")
        parts = rel.split("/")
        if info.type != pafs.FileType.File or parts[0] in LOCAL_ONLY or rel in (LOCK, JOURNAL):
            continue
        tonight = parts[0] == "runs" and len(parts) > 2 and (parts[1] == date or parts[1].startswith(f"{date}-"))
        live = isinstance(live_model, str) and rel.startswith(f"{live_model.rstrip('/')}/model/")
        if rel in POINTERS or parts[0] == "triplets" or tonight or live or rel in wanted:
            atomic_write_bytes(local / rel, _read(fs, info.path) or b"")
    return local, signatures(local)


def signatures(local: Path) -> dict[str, tuple[int, int]]:
    """relative path -> (size, mtime_ns) of each file of the mirror a night may push (no cache, lock or temp)."""
    out = {}
    for f in local.rglob("*"):
        rel = f.relative_to(local).as_posix()
        if f.is_file() and rel.split("/")[0] not in LOCAL_ONLY and not f.name.startswith(".") and rel != JOURNAL:
            st = f.stat()
            out[rel] = (st.st_size, st.st_mtime_ns)
    return out


def push(uri: str, local: Path, before: dict[str, tuple[int, int]], run_dir: str, lock: StateLock) -> list[str]:
    """Upload what the night changed in the mirror, in the order of the module docstring; returns the state files
    committed (relative paths). ``run_dir``: the night's run folder, relative to the state."""
    from cpo_engine.data.storage import CREDENTIALS_HINT, upload_folder

    fs, root = _fs(uri)
    after = signatures(local)
    changed = sorted(rel for rel, sig in after.items() if before.get(rel) != sig)
    folders = sorted({"/".join(rel.split("/")[:2]) for rel in changed if rel.split("/")[0] in ("runs", "failed")})
    state_files = sorted((rel for rel in changed if rel.split("/")[0] not in ("runs", "failed")),
                         key=lambda rel: (rel in POINTERS, POINTERS.index(rel) if rel in POINTERS else 0, rel))
    for folder in folders:  # 1. the run folders, each one's manifest last
        upload_folder(local / folder, f"{uri.rstrip('/')}/{folder}")
    if not state_files:
        return []
    moves = [[f"{run_dir}/staged/{rel}", rel] for rel in state_files]
    try:
        for (src, _), rel in zip(moves, state_files):  # 2. the state files, staged beside the run
            put_bytes(fs, f"{root}/{src}", (local / rel).read_bytes())
        lock.check()  # another writer took the lock over: do not commit over its night
        put_bytes(fs, f"{root}/{JOURNAL}", json.dumps({"moves": moves, "at": _now()}, indent=2).encode())  # 3.
        _apply(fs, root, moves)  # 4. pointers last
    except OSError as exc:
        raise DataError(f"cannot commit the night to the nightly state ({str(exc).splitlines()[0]}); the remote "
                        f"state is as it was, or completed by the next night ({JOURNAL})", source=uri,
                        fix=f"check the bucket and its write permission; {CREDENTIALS_HINT}") from exc
    return state_files


def on_store(exc: DataError, local: Path, uri: str) -> DataError:
    """``exc`` with the mirror's paths replaced by the state's URI (the file to restore or delete is the object)."""
    def named(text: str | None) -> str | None:
        return text.replace(str(local), uri) if text else text

    return DataError(named(exc.problem) or "", source=named(exc.source), column=exc.column, rows=exc.rows,
                     fix=named(exc.fix))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


__all__ = ["StateLock", "pull", "push", "recover", "mirror_folder", "signatures", "on_store", "LOCK", "POINTERS", "STALE_S"]
