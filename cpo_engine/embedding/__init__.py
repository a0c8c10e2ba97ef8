"""Representation engine: encoders, the embedding cache, torch PCA, representations."""

from cpo_engine.embedding.cache import CacheStats, EmbeddingCache
from cpo_engine.embedding.encoders import (DEFAULT_MODEL_ID, Encoder, SentenceTransformerEncoder, default_prefixes,
                                           make_encoder)
from cpo_engine.embedding.pca import TorchPCA
from cpo_engine.embedding.representations import Representations, build_representations, unique_texts

__all__ = ["Encoder", "SentenceTransformerEncoder", "make_encoder", "default_prefixes", "DEFAULT_MODEL_ID",
           "EmbeddingCache", "CacheStats", "TorchPCA", "Representations", "build_representations", "unique_texts"]
