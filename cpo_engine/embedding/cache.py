"""A content-addressed embedding cache on disk, so reruns and nightly jobs embed only new texts.

Key: sha256(encoder identity, prefix, text); the identity is the model's name plus a content hash of
its weights and config (:func:`~cpo_engine.embedding.encoders.encoder_identity`), so two models in
folders of the same name never share vectors. New vectors are appended as Parquet shards of at most
`shard_rows` texts (each written to a temp file, then renamed), so a killed job loses at most the
shard it was writing and a rerun embeds only what is missing.

Writers take the model folder's lock (:class:`~cpo_engine.utils.FolderLock`): a second process that
needs new vectors waits for the first, then embeds only what the first did not, so two writers never
interleave or embed the same texts twice. Under the lock, temp files left by a killed writer are
removed, and a shard that cannot be read (truncated, corrupted) is moved aside as
``*.parquet.corrupt`` and its texts are embedded again.

On an object store (``s3://``, ``gs://``: through :func:`cpo_engine.data.storage.location`, credentials from the
environment) there is no file lock: each shard is uploaded as one whole object under a unique name (an object
appears whole when its upload ends, so a reader never sees part of one), two writers at once may embed the same
texts twice (both shards hold the same vectors under the same keys; the first listed wins), and an unreadable
shard is skipped, not moved, and its texts embedded again into a new shard.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cpo_engine.embedding.encoders import Encoder, encode_stream, encoder_identity
from cpo_engine.exceptions import DataError
from cpo_engine.utils import (LEDGER, FolderLock, atomic_write_parquet, progress_bar, put_parquet,
                              remove_stale_temps, sha256_text)

log = logging.getLogger(__name__)


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


def cache_key(model_id: str, prefix: str, text: str) -> str:
    return sha256_text(f"{model_id}\x00{prefix}\x00{text}")


class _Unreadable(Exception):
    def __init__(self, shard: Path | str, cause: Exception) -> None:
        super().__init__(f"{shard}: {cause}")
        self.shard, self.cause = shard, cause


class EmbeddingCache:
    """Embeddings under `root/<model identity>/shard-*.parquet`.

    Parameters
    ----------
    root : path or URI
        Cache folder; created on first write. A local or mounted path (an NFS mount shares it between the
        nodes of a cluster; writers share a file lock), or an object-store URI (``s3://bucket/cpo_cache``:
        shards written as whole objects, no lock; see the module's docstring).
    shard_rows : int
        New vectors are committed every `shard_rows` texts, so a job killed while embedding
        resumes from its last committed shard instead of starting over.
    """

    def __init__(self, root: str | os.PathLike[str], shard_rows: int = 2048) -> None:
        if shard_rows < 1:
            raise ValueError(f"shard_rows must be >= 1, got {shard_rows}")
        from cpo_engine.data.storage import is_remote, location

        self.remote = is_remote(root)
        self._fs: Any = None
        if self.remote:  # the store is opened now, so a bad URI fails before anything is embedded
            self._fs, inner = location(root)
            self.root: Path | str = inner.rstrip("/")
        else:
            self.root = Path(str(root)[len("file://"):] if str(root).startswith("file://") else root)
        self.shard_rows = shard_rows
        self.stats = CacheStats()
        self._index: dict[str, dict[str, tuple[Path | str, int]]] = {}
        self._seen_shards: dict[str, set[Path | str]] = {}
        self._unreadable: set[Path | str] = set()

    def embed(self, encoder: Encoder, texts: Sequence[str], *, prefix: str = "",
              show_progress: bool = False) -> np.ndarray:
        """Embeddings of `texts` in order; only texts not yet cached are encoded."""
        texts = list(texts)
        ident = encoder_identity(encoder)
        keys = [cache_key(ident, prefix, t) for t in texts]
        unique = set(keys)
        # Hits and misses count what this call found and what it embedded: a text another process embedded
        # while this one waited for the lock is a hit.
        missing = len(unique - self._refresh(ident).keys())
        for _ in range(3):  # a shard found unreadable is set aside and its texts embedded again
            embedded = self._fill(encoder, ident, prefix, texts, keys, show_progress) if missing else 0
            self.stats.misses += embedded
            self.stats.hits += len(unique) - embedded
            try:
                return self._gather(self._refresh(ident), keys, encoder.dim)
            except _Unreadable as bad:
                missing = len(unique & self._set_aside(ident, bad))
                self.stats.hits -= len(unique)  # recounted on the next pass
                self.stats.misses -= embedded
        raise DataError("cache shards keep turning out unreadable", source=str(self._model_dir(ident)),
                        fix="delete this cache folder (it is rebuilt on the next run)")

    def _fill(self, encoder: Encoder, ident: str, prefix: str, texts: list[str], keys: list[str],
              show_progress: bool) -> int:
        """Embed and commit what is still missing, holding the model folder's lock; returns how many texts."""
        folder = self._model_dir(ident)
        with self._lock(folder):
            for shard in sorted(self._unreadable) if not self.remote else ():
                if shard.parent == folder and shard.exists():
                    os.replace(shard, shard.with_name(shard.name + ".corrupt"))
            index = self._refresh(ident)  # another process may have embedded them while we waited
            todo = list(dict.fromkeys(k for k in keys if k not in index))
            first = {k: i for i, k in reversed(list(enumerate(keys)))}
            # one bar over every text to embed (not one per shard), with rate and ETA; one shard per
            # `shard_rows` vectors, committed as they arrive (a Ray encoder streams them)
            bar = progress_bar(len(todo), f"embed {encoder.model_id.split('/')[-1]}", " texts", show_progress)
            start, t0 = 0, time.perf_counter()
            for vecs in encode_stream(encoder, [texts[first[k]] for k in todo], prefix=prefix, rows=self.shard_rows):
                self._write_shard(ident, prefix, todo[start:start + len(vecs)], vecs)
                start += len(vecs)
                bar.update(len(vecs))
            bar.close()
        LEDGER.embedded(len(todo), time.perf_counter() - t0)  # one summary line per run (workflows.common.log_cost_summary), not per shard
        return len(todo)

    def _model_dir(self, model_id: str) -> Any:
        name = re.sub(r"[^A-Za-z0-9._-]+", "__", model_id)
        return f"{self.root}/{name}" if self.remote else self.root / name

    @contextlib.contextmanager
    def _lock(self, folder: Any) -> Iterator[None]:
        """The writers' file lock of a local folder (temp files a killed writer left removed under it); none on an
        object store, where each shard is one whole object under a unique name."""
        if self.remote:
            yield
            return
        with FolderLock(folder, "embedding cache", wait=True):
            remove_stale_temps(folder, ".shard-*.tmp")
            yield

    def _shards(self, folder: Any) -> list[Any]:
        """The committed shards of a model folder, sorted (paths, or paths inside the store)."""
        if not self.remote:
            return sorted(folder.glob("shard-*.parquet")) if folder.is_dir() else []
        import pyarrow.fs as pafs

        try:
            infos = self._fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        except OSError as exc:
            from cpo_engine.data.storage import CREDENTIALS_HINT

            raise DataError(f"cannot list the embedding cache ({str(exc).splitlines()[0]})", source=folder,
                            fix=f"check embed.cache_dir and the store; {CREDENTIALS_HINT}") from exc
        names = (i.path for i in infos if i.type == pafs.FileType.File)
        return sorted(p for p in names if p.rsplit("/", 1)[-1].startswith("shard-") and p.endswith(".parquet"))

    def _read(self, shard: Any, column: str) -> Any:
        return pq.read_table(shard, columns=[column], filesystem=self._fs)[column]

    def _refresh(self, model_id: str) -> dict[str, tuple[Path | str, int]]:
        index = self._index.setdefault(model_id, {})
        seen = self._seen_shards.setdefault(model_id, set())
        folder = self._model_dir(model_id)
        for shard in self._shards(folder):
            if shard in seen:
                continue
            seen.add(shard)
            try:
                shard_keys = self._read(shard, "key").to_pylist()
            except (pa.ArrowException, OSError) as exc:
                log.warning("embedding cache: shard %s is unreadable (%s); it is %s and its texts embedded again",
                            shard, exc, "skipped" if self.remote else "moved aside")
                self._unreadable.add(shard)
                continue
            for row, key in enumerate(shard_keys):
                index.setdefault(key, (shard, row))
        return index

    def _set_aside(self, ident: str, bad: _Unreadable) -> set[str]:
        """Move an unreadable shard out of the cache (``*.corrupt``; on a store it is only skipped from now on); the
        keys it held."""
        log.warning("embedding cache: shard %s cannot be read (%s); %s and embedding its texts again",
                    bad.shard, bad.cause, "skipping it" if self.remote else "moving it aside")
        if not self.remote:
            with FolderLock(self._model_dir(ident), "embedding cache", wait=True):
                if bad.shard.exists():
                    os.replace(bad.shard, bad.shard.with_name(bad.shard.name + ".corrupt"))
        index = self._index[ident]
        lost = {k for k, (shard, _) in index.items() if shard == bad.shard}
        for k in lost:
            del index[k]
        return lost

    def _write_shard(self, model_id: str, prefix: str, keys: list[str], vecs: np.ndarray) -> None:
        dim = vecs.shape[1]
        flat = pa.array(np.ascontiguousarray(vecs, dtype=np.float32).ravel())
        table = pa.table({
            "key": pa.array(keys, pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(flat, dim),
        }).replace_schema_metadata({"model_id": model_id, "prefix": prefix, "dim": str(dim)})
        name = f"shard-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.parquet"
        if self.remote:  # one whole object: uploaded from memory in one stream, visible only once complete
            put_parquet(self._fs, f"{self._model_dir(model_id)}/{name}", table)
        else:
            atomic_write_parquet(table, self._model_dir(model_id) / name)
        log.debug("embedding cache: wrote %d new vectors for %s", len(keys), model_id)

    def _gather(self, index: dict[str, tuple[Path | str, int]], keys: list[str], dim: int) -> np.ndarray:
        out = np.empty((len(keys), dim), dtype=np.float32)
        by_shard: dict[Path | str, list[tuple[int, int]]] = {}
        for i, k in enumerate(keys):
            shard, row = index[k]
            by_shard.setdefault(shard, []).append((i, row))
        for shard, pairs in by_shard.items():
            try:
                vec = self._read(shard, "vector").combine_chunks()
                mat = vec.flatten().to_numpy().reshape(len(vec), vec.type.list_size)
            except (pa.ArrowException, OSError, AttributeError, ValueError) as exc:
                raise _Unreadable(shard, exc) from exc
            if mat.shape[1] != dim:
                raise DataError(f"the cache shard holds {mat.shape[1]}-dim vectors, the encoder makes {dim}",
                                source=str(shard),
                                fix=f"delete the cache folder {str(shard).rsplit('/', 1)[0]} (it is rebuilt)")
            dst, src = zip(*pairs)
            out[list(dst)] = mat[list(src)]
        return out

    def __len__(self) -> int:
        return sum(len(v) for v in self._index.values())


__all__ = ["EmbeddingCache", "CacheStats", "cache_key"]
