"""Representations: unique query and prompt texts embedded once, PCA fitted separately on each."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cpo_engine.embedding.cache import EmbeddingCache
from cpo_engine.embedding.encoders import Encoder, default_prefixes, encoder_identity, make_encoder
from cpo_engine.embedding.pca import TorchPCA

log = logging.getLogger(__name__)


@dataclass
class Representations:
    """Query features X and prompt features T for a triplet table.

    `X[row_query[i]]` and `T[row_prompt[i]]` are the features of row `i` of the table.
    """

    query_ids: np.ndarray
    prompt_ids: np.ndarray
    query_texts: list[str]
    prompt_texts: list[str]
    X: np.ndarray
    T: np.ndarray
    row_query: np.ndarray
    row_prompt: np.ndarray
    query_pca: TorchPCA
    prompt_pca: TorchPCA
    query_embeddings: np.ndarray
    prompt_embeddings: np.ndarray
    provenance: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "n_queries": int(len(self.query_ids)), "n_prompts": int(len(self.prompt_ids)),
            "query_components": int(self.X.shape[1]), "prompt_components": int(self.T.shape[1]),
            "query_explained_variance": float(self.query_pca.explained_variance_ratio_.sum()),
            "prompt_explained_variance": float(self.prompt_pca.explained_variance_ratio_.sum()),
            **self.provenance,
        }

    def save(self, folder: str | os.PathLike[str]) -> None:
        """Save both PCA states with their provenance (encoder id and prefixes)."""
        folder = Path(folder)
        self.query_pca.save(folder / "query_pca.safetensors", metadata={**self.provenance, "role": "query"})
        self.prompt_pca.save(folder / "prompt_pca.safetensors", metadata={**self.provenance, "role": "prompt"})


def unique_texts(table: pa.Table, id_col: str, text_col: str) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Unique ids in first-seen order, their texts, and each row's index into them."""
    ids = table.column(id_col).combine_chunks()
    encoded = pc.dictionary_encode(ids)
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    first_rows = np.unique(codes, return_index=True)[1]  # dictionary order is first-seen order
    texts = table.column(text_col).take(pa.array(first_rows)).to_pylist()
    return encoded.dictionary.to_numpy(zero_copy_only=False).astype(object), texts, codes.astype(np.int64)


def build_representations(
    table: Any,
    *,
    encoder: Encoder | None = None,
    cache: EmbeddingCache | str | os.PathLike[str] | None = None,
    query_components: int | float | None = 16,
    prompt_components: int | float | None = 32,
    query_prefix: str | None = None,
    prompt_prefix: str | None = None,
    device: str = "auto",
    show_progress: bool = False,
    query_pca: TorchPCA | None = None,
    prompt_pca: TorchPCA | None = None,
    pca_backend: str = "torch",
) -> Representations:
    """Embed a validated triplet table's queries and prompts and fit a PCA for each.

    ``table`` that is not a ``pyarrow.Table`` (a pandas DataFrame, a path) is validated first
    (:func:`~cpo_engine.data.validate_triplets`, which converts it once). Prefixes default to what the encoder's model expects (e.g. nomic's 'search_query: ').
    The prompt PCA is capped at n_prompts - 1 components. Fitted ``query_pca``/``prompt_pca`` (a saved
    model bundle's) are used as they are instead of fitting new ones; ``pca_backend='cuml'`` fits new
    ones with the cuML twin (:mod:`cpo_engine.embedding.pca_cuml`).
    """
    from cpo_engine.embedding.pca_cuml import fit_pca

    if not isinstance(table, pa.Table):
        from cpo_engine.data.validate import validate_triplets

        table = validate_triplets(table)
    encoder = encoder or make_encoder(device=device)
    if cache is not None and not isinstance(cache, EmbeddingCache):
        cache = EmbeddingCache(cache)
    q_pre, p_pre = default_prefixes(encoder.model_id)
    q_pre = q_pre if query_prefix is None else query_prefix
    p_pre = p_pre if prompt_prefix is None else prompt_prefix
    qids, qtexts, row_q = unique_texts(table, "query_id", "query_text")
    pids, ptexts, row_p = unique_texts(table, "prompt_id", "prompt_text")
    q_emb = _embed(encoder, cache, qtexts, q_pre, show_progress)
    p_emb = _embed(encoder, cache, ptexts, p_pre, show_progress)
    qpca = query_pca or fit_pca(_cap(query_components, len(qids)), q_emb, pca_backend, device)
    ppca = prompt_pca or fit_pca(_cap(prompt_components, len(pids)), p_emb, pca_backend, device)
    prov = {"encoder": encoder.model_id, "encoder_identity": encoder_identity(encoder),
            "query_prefix": q_pre, "prompt_prefix": p_pre,
            "embedding_dim": int(q_emb.shape[1])}
    if isinstance(cache, EmbeddingCache):
        prov["cache"] = {"hits": cache.stats.hits, "misses": cache.stats.misses}
    return Representations(qids, pids, qtexts, ptexts, qpca.transform(q_emb), ppca.transform(p_emb), row_q, row_p,
                           qpca, ppca, q_emb, p_emb, prov)


def text_embedder(encoder: Encoder, cache: EmbeddingCache | None, pca: TorchPCA,
                  prefix: str) -> Callable[[Sequence[str]], np.ndarray]:
    """texts -> features: the encoder through the cache, then a fitted PCA (how new candidate prompts
    are placed in the T space of a fitted model). The encoder loads its weights on first use."""

    def embed(texts: Sequence[str]) -> np.ndarray:
        return pca.transform(_embed(encoder, cache, list(texts), prefix, False))

    return embed


def _embed(encoder: Encoder, cache: EmbeddingCache | None, texts: list[str], prefix: str, progress: bool) -> np.ndarray:
    """Each distinct text is encoded once (the cache deduplicates by key; without a cache, here)."""
    if cache is not None:
        return cache.embed(encoder, texts, prefix=prefix, show_progress=progress)
    first = dict.fromkeys(texts)
    if len(first) == len(texts):
        return encoder.encode(texts, prefix=prefix, show_progress=progress)
    uniq = list(first)
    where = {t: i for i, t in enumerate(uniq)}
    return encoder.encode(uniq, prefix=prefix, show_progress=progress)[[where[t] for t in texts]]


def _cap(k: int | float | None, n: int) -> int | float | None:
    return min(k, n - 1) if isinstance(k, int) else k


__all__ = ["Representations", "build_representations", "unique_texts", "text_embedder"]
