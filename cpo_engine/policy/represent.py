"""The encoder, embedding cache and PCAs a fitted model's texts go through: built once per run or per
loaded bundle (:meth:`cpo_engine.policy.bundle.ModelBundle.representer`) and shared by every step that embeds."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from cpo_engine.embedding.config import EmbedConfig, PCAConfig


class Representer:
    """The run's encoder and embedding cache, built once and shared by every step that embeds (the
    representations of the table, then the candidate prompts of the search)."""

    def __init__(self, embed: EmbedConfig, cache_dir: Any = "config", encoder: Any = None) -> None:
        from cpo_engine.distributed import ensure_ray
        from cpo_engine.embedding import encoder_and_cache

        self.cfg = embed
        # embed.executor 'auto' sends big batches to Ray only when this process runs on a Ray cluster
        self.encoder, self.cache = encoder_and_cache(embed, cache_dir, connect=ensure_ray)
        if encoder is not None:  # an already loaded encoder of the same model (tests, long-lived workers)
            self.encoder = encoder

    def represent(self, table: pa.Table, pca: PCAConfig | None = None, *, query_pca: Any = None,
                  prompt_pca: Any = None, show_progress: bool = True) -> Any:
        """Embeddings through the cache, then the two PCAs (fitted here, or a bundle's fitted ones)."""
        from cpo_engine.embedding import build_representations

        pca = pca or PCAConfig()
        e = self.cfg
        return build_representations(table, encoder=self.encoder, cache=self.cache,
                                     query_components=pca.query_components, prompt_components=pca.prompt_components,
                                     query_prefix=e.query_prefix, prompt_prefix=e.prompt_prefix, device=e.device,
                                     show_progress=show_progress, query_pca=query_pca, prompt_pca=prompt_pca,
                                     pca_backend=pca.backend)

    def prompt_embedder(self, reps: Any) -> Any:
        """texts -> T in the representations' prompt PCA space (for new candidate prompts)."""
        from cpo_engine.embedding import text_embedder

        prefix = reps.provenance.get("prompt_prefix", "") or ""
        return text_embedder(self.encoder, self.cache, reps.prompt_pca, prefix)


__all__ = ["Representer"]
