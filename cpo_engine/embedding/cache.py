"""A content-addressed embedding cache on disk, so reruns and nightly jobs embed only new texts.

Key: sha256(model id, prefix, text). New vectors are appended as Parquet shards of at most
`shard_rows` texts (each written to a temp file, then renamed), so a killed job loses at most the
shard it was writing, a rerun embeds only what is missing, and concurrent writers never corrupt each
other.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cpo_engine.embedding.encoders import Encoder, encode_stream
from cpo_engine.utils import atomic_write_parquet, sha256_text

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


class EmbeddingCache:
    """Embeddings on disk under `root/<model>/shard-*.parquet`.

    Parameters
    ----------
    root : path
        Cache folder; created on first write.
    shard_rows : int
        New vectors are committed every `shard_rows` texts, so a job killed while embedding
        resumes from its last committed shard instead of starting over.
    """

    def __init__(self, root: str | os.PathLike[str], shard_rows: int = 2048) -> None:
        if shard_rows < 1:
            raise ValueError(f"shard_rows must be >= 1, got {shard_rows}")
        self.root = Path(root)
        self.shard_rows = shard_rows
        self.stats = CacheStats()
        self._index: dict[str, dict[str, tuple[Path, int]]] = {}
        self._seen_shards: dict[str, set[Path]] = {}

    def embed(self, encoder: Encoder, texts: Sequence[str], *, prefix: str = "",
              show_progress: bool = False) -> np.ndarray:
        """Embeddings of `texts` in order; only texts not yet cached are encoded."""
        texts = list(texts)
        keys = [cache_key(encoder.model_id, prefix, t) for t in texts]
        index = self._refresh(encoder.model_id)
        unique_missing = list(dict.fromkeys(k for k in keys if k not in index))
        self.stats.hits += sum(1 for k in set(keys) if k in index)
        self.stats.misses += len(unique_missing)
        if unique_missing:
            first = {k: i for i, k in reversed(list(enumerate(keys)))}
            todo = [texts[first[k]] for k in unique_missing]
            start = 0
            # one shard per `shard_rows` vectors, committed as they arrive (a Ray encoder streams them)
            for vecs in encode_stream(encoder, todo, prefix=prefix, rows=self.shard_rows, show_progress=show_progress):
                self._write_shard(encoder.model_id, prefix, unique_missing[start:start + len(vecs)], vecs)
                start += len(vecs)
            index = self._refresh(encoder.model_id)
        return self._gather(index, keys, encoder.dim)

    def _model_dir(self, model_id: str) -> Path:
        return self.root / re.sub(r"[^A-Za-z0-9._-]+", "__", model_id)

    def _refresh(self, model_id: str) -> dict[str, tuple[Path, int]]:
        index = self._index.setdefault(model_id, {})
        seen = self._seen_shards.setdefault(model_id, set())
        folder = self._model_dir(model_id)
        if folder.is_dir():
            for shard in sorted(folder.glob("shard-*.parquet")):
                if shard not in seen:
                    for row, key in enumerate(pq.read_table(shard, columns=["key"])["key"].to_pylist()):
                        index.setdefault(key, (shard, row))
                    seen.add(shard)
        return index

    def _write_shard(self, model_id: str, prefix: str, keys: list[str], vecs: np.ndarray) -> None:
        dim = vecs.shape[1]
        flat = pa.array(np.ascontiguousarray(vecs, dtype=np.float32).ravel())
        table = pa.table({
            "key": pa.array(keys, pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(flat, dim),
        }).replace_schema_metadata({"model_id": model_id, "prefix": prefix, "dim": str(dim)})
        name = f"shard-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.parquet"
        atomic_write_parquet(table, self._model_dir(model_id) / name)
        log.info("embedding cache: wrote %d new vectors for %s", len(keys), model_id)

    def _gather(self, index: dict[str, tuple[Path, int]], keys: list[str], dim: int) -> np.ndarray:
        out = np.empty((len(keys), dim), dtype=np.float32)
        by_shard: dict[Path, list[tuple[int, int]]] = {}
        for i, k in enumerate(keys):
            shard, row = index[k]
            by_shard.setdefault(shard, []).append((i, row))
        for shard, pairs in by_shard.items():
            vec = pq.read_table(shard, columns=["vector"])["vector"].combine_chunks()
            mat = vec.flatten().to_numpy().reshape(len(vec), vec.type.list_size)
            if mat.shape[1] != dim:
                raise ValueError(f"cache shard {shard} holds {mat.shape[1]}-dim vectors, the encoder makes {dim}: "
                                 "delete that cache folder (the model id does not identify the weights)")
            dst, src = zip(*pairs)
            out[list(dst)] = mat[list(src)]
        return out

    def __len__(self) -> int:
        return sum(len(v) for v in self._index.values())


__all__ = ["EmbeddingCache", "CacheStats", "cache_key"]
