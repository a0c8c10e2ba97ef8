"""Embedding on Ray Data: one ``map_batches`` stage of encoder actors that fills the same cache.

The layout of ``ray.data.llm`` (and of :mod:`cpo_engine.generation.ray_pipeline`): texts become a
dataset of ``{"index", "text"}`` blocks; one ``map_batches`` stage runs an actor pool of
:class:`EncoderActor` (each loads the encoder once, on its GPU when the cluster has GPUs, else with
fractional CPUs); order is preserved, and the vectors stream back to the driver, where the
:class:`~cpo_engine.embedding.cache.EmbeddingCache` commits them shard by shard exactly as it does
for the in-process encoder (same keys, same shards, a killed job resumes from its last shard).

:class:`RayEncoder` implements the :class:`~cpo_engine.embedding.encoders.Encoder` protocol over this
pipeline, so everything that embeds (representations, the search's candidate prompts, nightly jobs)
uses it unchanged. ``executor='auto'`` uses Ray only when the process is attached to a Ray cluster
(inside a Ray job, ``RAY_ADDRESS`` set, or Ray already initialized) and a call has at least
``ray_min_texts`` texts to embed; smaller calls stay in-process (actors load the model per call).
Ray is imported only here, when a call goes to it.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from cpo_engine.embedding.encoders import SentenceTransformerEncoder, encoder_identity
from cpo_engine.exceptions import ConfigError

log = logging.getLogger(__name__)

EXECUTORS = ("auto", "local", "ray")


def on_ray_cluster() -> bool:
    """True inside a Ray job or when this process already attached to Ray (imports nothing new)."""
    if os.environ.get("RAY_ADDRESS"):
        return True
    ray = sys.modules.get("ray")
    return bool(ray is not None and getattr(ray, "is_initialized", lambda: False)())


class EncoderActor:
    """A Ray Data actor: builds its encoder once, then maps ``{"index", "text"}`` batches to vectors.

    Parameters
    ----------
    spec : dict
        ``SentenceTransformerEncoder`` keyword arguments (model path and id, device, batch size, threads).
    prefix : str
        Prepended to every text (the role prefix the cache key records).
    """

    def __init__(self, spec: dict[str, Any], prefix: str) -> None:
        self.encoder = SentenceTransformerEncoder(**spec)
        self.prefix = prefix

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(t) for t in batch["text"]]
        return {"index": batch["index"], "vector": self.encoder.encode(texts, prefix=self.prefix)}


class RayEncoder:
    """The :class:`Encoder` protocol over a Ray Data actor pool (see the module docstring).

    Parameters
    ----------
    local : SentenceTransformerEncoder
        The in-process encoder: its settings are what every actor builds, and it embeds the calls
        that do not go to Ray (``executor='auto'`` off a cluster or below ``min_texts``).
    executor : {'auto', 'ray'}
        'ray' always uses Ray (starting a local Ray when none is attached).
    actors : int, optional
        Actor-pool size; None: one per GPU when the cluster has GPUs, else one per
        ``cpus_per_actor`` of the cluster's CPUs, less one CPU for the driver's read tasks.
    cpus_per_actor : float
        Logical CPUs each actor reserves (fractions allowed); its torch threads are ``max(1, floor)``.
    gpus_per_actor : float, optional
        GPUs each actor reserves; None: 1 when the cluster has GPUs, else 0.
    batch_size : int
        Texts per actor call.
    min_texts : int
        With ``executor='auto'``, calls with fewer texts embed in-process.
    connect : callable, optional
        Attaches this process to Ray (e.g. :func:`cpo_engine.distributed.ensure_ray`); None lets
        Ray Data attach (or start a local Ray) on first use.
    """

    def __init__(self, local: SentenceTransformerEncoder, *, executor: str = "auto", actors: int | None = None,
                 cpus_per_actor: float = 1.0, gpus_per_actor: float | None = None, batch_size: int = 256,
                 min_texts: int = 4096, connect: Callable[[], Any] | None = None) -> None:
        if executor not in ("auto", "ray"):
            raise ConfigError(f"RayEncoder executor must be 'auto' or 'ray', got '{executor}'")
        if (actors is not None and actors < 1) or cpus_per_actor <= 0 or batch_size < 1:
            raise ConfigError("embed.ray_actors and embed.ray_batch_size must be >= 1 and embed.ray_cpus_per_actor > 0")
        self.local, self.executor = local, executor
        self.actors, self.cpus_per_actor, self.gpus_per_actor = actors, cpus_per_actor, gpus_per_actor
        self.batch_size, self.min_texts, self.connect = batch_size, min_texts, connect
        self.ray_calls = 0
        self.last_pool: dict[str, Any] = {}
        self._dim: int | None = None

    @property
    def model_id(self) -> str:
        return self.local.model_id

    @property
    def identity(self) -> str:
        """The local encoder's content identity: vectors from the actors and from this process share one
        cache key (:func:`~cpo_engine.embedding.encoders.encoder_identity`)."""
        return encoder_identity(self.local)

    @property
    def dim(self) -> int:
        """Embedding width: from the vectors the actors returned, so the driver need not load the model."""
        return self._dim if self._dim is not None else self.local.dim

    def uses_ray(self, n_texts: int) -> bool:
        """Whether a call embedding ``n_texts`` texts goes to the actor pool."""
        return self.executor == "ray" or (on_ray_cluster() and n_texts >= self.min_texts)

    def encode(self, texts: Sequence[str], *, prefix: str = "", show_progress: bool = False) -> np.ndarray:
        """Embeddings of ``texts`` in order (float32, L2-normalized), on Ray or in-process."""
        if not self.uses_ray(len(texts)):
            return self.local.encode(texts, prefix=prefix, show_progress=show_progress)
        parts = list(self.encode_stream(texts, prefix=prefix, rows=max(1, len(texts))))
        return np.concatenate(parts) if parts else np.empty((0, self.dim), dtype=np.float32)

    def encode_stream(self, texts: Sequence[str], *, prefix: str = "", rows: int = 2048,
                      show_progress: bool = False) -> Iterator[np.ndarray]:
        """Embeddings of ``texts`` in order, ``rows`` at a time, as the actors return them (one Ray Data
        execution for the whole call: actors load the model once)."""
        if not texts:
            return
        if not self.uses_ray(len(texts)):
            for s in range(0, len(texts), rows):
                yield self.local.encode(texts[s:s + rows], prefix=prefix, show_progress=show_progress)
            return
        ds = self._dataset(list(texts), prefix)
        self.ray_calls += 1
        expect = 0
        for batch in ds.iter_batches(batch_size=rows, batch_format="numpy"):
            index = np.asarray(batch["index"])
            if index.size and (index[0] != expect or np.any(np.diff(index) != 1)):
                raise RuntimeError("Ray Data returned embeddings out of order (preserve_order is off)")
            expect += index.size
            vecs = np.ascontiguousarray(np.stack(batch["vector"]) if batch["vector"].dtype == object
                                        else batch["vector"], dtype=np.float32)
            self._dim = int(vecs.shape[1])
            yield vecs
        if expect != len(texts):
            raise RuntimeError(f"Ray Data returned {expect} embeddings for {len(texts)} texts")

    def _dataset(self, texts: list[str], prefix: str) -> Any:
        import pyarrow as pa

        from cpo_engine.utils import require

        if self.connect is not None:
            self.connect()
        ray = require("ray")
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        pool = self.pool()
        idx = np.arange(len(texts), dtype=np.int64)
        blocks = [pa.table({"index": idx[s:s + self.batch_size], "text": texts[s:s + self.batch_size]})
                  for s in range(0, len(texts), self.batch_size)]
        log.info("embedding %d texts on Ray: %d actor(s), %s CPU / %s GPU each", len(texts), pool["actors"],
                 pool["num_cpus"], pool["num_gpus"])
        spec = {"model_path": self.local.model_path, "model_id": self.local.model_id,
                "device": "cuda" if pool["num_gpus"] else "cpu", "batch_size": self.local.batch_size,
                "num_threads": max(1, int(pool["num_cpus"])), "chunk_size": self.batch_size}
        return ray.data.from_arrow(blocks).map_batches(
            EncoderActor, fn_constructor_kwargs={"spec": spec, "prefix": prefix}, batch_size=self.batch_size,
            batch_format="numpy", concurrency=pool["actors"], num_cpus=pool["num_cpus"], num_gpus=pool["num_gpus"])

    def pool(self) -> dict[str, Any]:
        """Actors and per-actor resources on the attached cluster (see the class parameters)."""
        import ray

        res = ray.cluster_resources() if ray.is_initialized() else {}
        gpus, cpus = float(res.get("GPU", 0.0)), float(res.get("CPU", os.cpu_count() or 1))
        per_gpu = self.gpus_per_actor if self.gpus_per_actor is not None else (1.0 if gpus else 0.0)
        if self.actors is not None:
            actors = self.actors
        elif per_gpu:
            actors = max(1, int(gpus // per_gpu))
        else:
            actors = max(1, int((cpus - 1) // self.cpus_per_actor))
        self.last_pool = {"actors": actors, "num_cpus": self.cpus_per_actor, "num_gpus": per_gpu}
        return self.last_pool


def make_embed_encoder(cfg: Any, connect: Callable[[], Any] | None = None) -> Any:
    """The encoder an :class:`~cpo_engine.embedding.config.EmbedConfig` asks for: the in-process one for
    ``executor='local'``, else a :class:`RayEncoder` around it (which stays in-process off a cluster
    in 'auto' mode)."""
    from cpo_engine.embedding.encoders import make_encoder

    local = make_encoder(cfg.encoder, device=cfg.device, batch_size=cfg.batch_size, num_threads=cfg.num_threads)
    if cfg.executor not in EXECUTORS:
        raise ConfigError(f"embed.executor must be one of {EXECUTORS}, got '{cfg.executor}'")
    if cfg.executor == "local":
        return local
    return RayEncoder(local, executor=cfg.executor, actors=cfg.ray_actors, cpus_per_actor=cfg.ray_cpus_per_actor,
                      gpus_per_actor=cfg.ray_gpus_per_actor, batch_size=cfg.ray_batch_size,
                      min_texts=cfg.ray_min_texts, connect=connect)


def encoder_and_cache(cfg: Any, cache_dir: Any = "config", connect: Any = None) -> tuple[Any, Any]:
    """The encoder and embedding cache of an :class:`~cpo_engine.embedding.config.EmbedConfig`: the one
    place every workflow builds them. ``cache_dir`` overrides the config's folder (None: no cache);
    ``connect`` attaches to Ray when the config's executor sends texts there
    (:func:`make_embed_encoder`)."""
    from cpo_engine.embedding.cache import EmbeddingCache

    encoder = make_embed_encoder(cfg, connect=connect)
    folder = cfg.cache_dir if cache_dir == "config" else cache_dir
    return encoder, (EmbeddingCache(folder) if folder else None)


__all__ = ["EXECUTORS", "EncoderActor", "RayEncoder", "encoder_and_cache", "make_embed_encoder", "on_ray_cluster"]
