"""Resumable sharded Parquet store for generated rows.

Layout of a run folder::

    manifest.json            format, run identity (hash of everything that decides the rows),
                             shard list with row counts and sha256, totals, complete flag
    shards/part-000000.parquet
    shards/part-000001.parquet ...

Every shard is written to a temp file and renamed, then the manifest is rewritten the same way:
the manifest is the commit point. A kill between the two leaves a shard the manifest does not
list; it is deleted when the run is reopened and its rows are generated again. So a rerun after a
kill at any moment yields exactly the rows of an uninterrupted run (keyed by run, query, prompt,
sample), with no loss and no duplicates.

One process writes a run folder at a time: :meth:`ShardStore.open` takes the folder's lock
(:class:`~cpo_engine.utils.FolderLock`) and a second writer is refused with a message naming the
first. On reopening, temp files of a killed write are removed; a listed shard that was deleted is
dropped from the manifest (its rows are generated again) and one whose checksum no longer matches
is refused. ``complete`` is true only when every planned row has a result without error.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cpo_engine.exceptions import ConfigError, DataError
from cpo_engine.generation.stages import ROW_SCHEMA
from cpo_engine.utils import (FolderLock, atomic_write_json, atomic_write_parquet, remove_stale_temps, sha256_file,
                              sha256_text, versions)

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "cpo-generation/1"
KEY_COLUMNS = ("run_id", "query_id", "prompt_id", "sample")


@dataclass
class ShardStore:
    """A run folder: open it (creating or resuming), append shards, finish.

    Parameters
    ----------
    root : Path
        The run folder.
    identity : dict
        Everything that decides which rows a run holds (run id, inputs' hashes, design, template,
        sampling, model, grader). Reopening a folder with a different identity is refused.
    """

    root: Path
    identity: dict[str, Any]
    manifest: dict[str, Any] = field(default_factory=dict)
    _lock: FolderLock | None = field(default=None, repr=False)

    @classmethod
    def open(cls, root: str | Path, identity: dict[str, Any], overwrite: bool = False) -> "ShardStore":
        """Create or resume the run folder ``root``, holding its lock until :meth:`close`."""
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise ConfigError(f"--out {root} is a file, not a folder\n  fix: pass a folder for the generation run")
        lock = FolderLock(root, "generation run folder", fix=" or pass another --out").acquire()
        try:
            store = cls(root=root, identity=identity, _lock=lock)
            store._open(overwrite)
        except BaseException:
            lock.release()
            raise
        return store

    def _open(self, overwrite: bool) -> None:
        root, path = self.root, self.root / MANIFEST
        remove_stale_temps(root, f".{MANIFEST}.*.tmp")
        if path.exists() and not overwrite:
            self.manifest = _read_manifest(path)
            self._check_identity()
            self._check_shards()
        else:
            if overwrite and (root / "shards").exists():
                for f in (root / "shards").glob("*.parquet"):
                    f.unlink()
            self.manifest = self._new_manifest()
            atomic_write_json(path, self.manifest)
        self._drop_orphans()

    def close(self) -> None:
        """Release the run folder's lock (the store can no longer append)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "ShardStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _check_shards(self) -> None:
        """Drop listed shards that were deleted (their rows are generated again); refuse edited ones."""
        kept = []
        for shard in self.manifest["shards"]:
            path = self.root / shard["file"]
            if not path.is_file():
                log.warning("%s: shard %s listed in the manifest is missing; its %d rows will be generated again",
                            self.root, shard["file"], shard["rows"])
                self.manifest["rows"] -= shard["rows"]
                self.manifest["errors"] -= shard.get("errors", 0)
                continue
            if sha256_file(path) != shard["sha256"]:
                raise DataError("the shard's checksum does not match the manifest: it was modified after it was "
                                "written", source=str(path),
                                fix="delete that shard (its rows are generated again on the next run) or restore it")
            kept.append(shard)
        if len(kept) != len(self.manifest["shards"]):
            self.manifest["shards"] = kept
            self.manifest["complete"] = False
            self._save()

    def _new_manifest(self) -> dict[str, Any]:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return {"format": FORMAT, "kind": "generate", "identity": self.identity, "identity_sha256": _hash(self.identity),
                "shards": [], "rows": 0, "errors": 0, "complete": False, "created_at": now,
                "updated_at": now, "versions": versions()}

    def _check_identity(self) -> None:
        if self.manifest.get("identity_sha256") != _hash(self.identity):
            old, new = self.manifest.get("identity", {}), json.loads(json.dumps(self.identity, default=str))
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise ConfigError(
                f"{self.root} holds a run with different settings ({', '.join(diff)} differ); "
                "use another output folder or run id, or pass --overwrite to discard it"
            )

    def _drop_orphans(self) -> None:
        listed = {s["file"] for s in self.manifest["shards"]}
        for f in sorted((self.root / "shards").glob("*")) if (self.root / "shards").exists() else []:
            if f"shards/{f.name}" not in listed:
                f.unlink()

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete"))

    def done_keys(self, retry_errors: bool = False) -> set[tuple[str, str, str, int]]:
        """Keys of every committed row (without the failed ones when ``retry_errors``)."""
        keys: set[tuple[str, str, str, int]] = set()
        for shard in self.manifest["shards"]:
            t = pq.read_table(self.root / shard["file"], columns=[*KEY_COLUMNS, "error"])
            for key, err in zip(zip(*(t.column(c).to_pylist() for c in KEY_COLUMNS)), t.column("error").to_pylist()):
                if err is None or not retry_errors:
                    keys.add(key)
                else:
                    keys.discard(key)  # a later retry of a failed row may have succeeded: last wins
        return keys

    def append(self, table: pa.Table) -> None:
        """Commit one shard: write it atomically, then the manifest atomically."""
        if table.num_rows == 0:
            return
        table = table.cast(ROW_SCHEMA) if table.schema != ROW_SCHEMA else table
        # After the index of the last listed shard (not the count: a deleted shard leaves a gap, and reusing a
        # listed shard's name would overwrite its rows).
        used = [int(Path(sh["file"]).stem.split("-")[-1]) for sh in self.manifest["shards"]]
        name = f"shards/part-{max(used, default=-1) + 1:06d}.parquet"
        atomic_write_parquet(table, self.root / name)
        n_err = table.num_rows - table.column("error").null_count
        self.manifest["shards"].append({"file": name, "rows": table.num_rows, "errors": n_err,
                                        "sha256": sha256_file(self.root / name)})
        self.manifest["rows"] += table.num_rows
        self.manifest["errors"] += n_err
        self._save()

    def failed_keys(self) -> set[tuple[str, str, str, int]]:
        """Keys whose last committed row failed (call or grading error)."""
        return self.done_keys() - self.done_keys(retry_errors=True)

    def finish(self, summary: dict[str, Any], complete: bool = True) -> None:
        """Record the summary; ``complete``: every planned row has a result without error."""
        self.manifest["complete"] = bool(complete)
        self.manifest["summary"] = summary
        self._save()

    def _save(self) -> None:
        self.manifest["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.manifest.setdefault("kind", "generate")  # the folder's kind, as every command's manifest names it
        atomic_write_json(self.root / MANIFEST, self.manifest)


def _hash(obj: Any) -> str:
    return sha256_text(json.dumps(obj, sort_keys=True, default=str))


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read the run manifest ({exc})", source=str(path),
                        fix="the manifest is written atomically; restore it or start a new run folder") from exc
    if manifest.get("format") != FORMAT:
        raise DataError(f"not a generation manifest (format {manifest.get('format')!r}, expected {FORMAT!r})",
                        source=str(path))
    return manifest


def read_generated(root: str | Path, drop_errors: bool = False, verify: bool = False) -> pa.Table:
    """All committed rows of a run folder (shards listed in the manifest), one row per key.

    Parameters
    ----------
    drop_errors : bool
        Drop rows whose call or grading failed (``error`` set): what model fitting wants.
    verify : bool
        Check every shard's sha256 against the manifest.
    """
    root = Path(root)
    manifest = _read_manifest(root / MANIFEST)
    tables = []
    for shard in manifest["shards"]:
        path = root / shard["file"]
        if not path.is_file():
            raise DataError("a shard listed in the run's manifest is missing", source=str(path),
                            fix="rerun the same `cpo generate` command: the missing rows are generated again")
        if verify and sha256_file(path) != shard["sha256"]:
            raise DataError("shard checksum does not match the manifest", source=str(path),
                            fix="the file was modified after it was written; regenerate the run")
        tables.append(pq.read_table(path))
    table = pa.concat_tables(tables) if tables else ROW_SCHEMA.empty_table()
    table = _last_per_key(table)
    if drop_errors:
        table = table.filter(pc.is_null(table.column("error")))
    return table


def _last_per_key(table: pa.Table) -> pa.Table:
    """One row per key, the last committed (a retried failure supersedes the failed row)."""
    keys = list(zip(*(table.column(c).to_pylist() for c in KEY_COLUMNS)))
    last = {k: i for i, k in enumerate(keys)}
    if len(last) == len(keys):
        return table
    return table.take(pa.array(sorted(last.values()), pa.int64()))

__all__ = ["ShardStore", "read_generated", "MANIFEST", "KEY_COLUMNS"]
