"""Representation engine: encoders, the embedding cache, torch PCA, representations.

Names are imported on first use (PEP 562), so ``cpo_engine.embedding.config`` stays light for the CLI.
"""

from __future__ import annotations

from cpo_engine.utils import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "cache": ("CacheStats", "EmbeddingCache"),
    "config": ("EmbedConfig", "PCAConfig"),
    "encoders": ("DEFAULT_MODEL_ID", "Encoder", "SentenceTransformerEncoder", "default_prefixes", "make_encoder",
                 "encoder_identity", "model_fingerprint"),
    "pca": ("TorchPCA",),
    "pca_cuml": ("CumlPCA", "fit_pca"),
    "ray_embed": ("RayEncoder", "EncoderActor", "encoder_and_cache", "make_embed_encoder", "on_ray_cluster"),
    "representations": ("Representations", "build_representations", "text_embedder", "unique_texts"),
})
