"""Configuration of the representation stage: encoder, cache, PCA sizes (no heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EmbedConfig:
    """How texts become vectors."""

    encoder: str = "minilm"
    """'minilm' (the packaged all-MiniLM-L6-v2) or a local sentence-transformers folder."""
    device: str = "auto"
    """'auto' (CUDA when present), 'cpu' or 'cuda[:N]'."""
    batch_size: int = 64
    """Texts per forward pass."""
    num_threads: int | None = None
    """torch CPU threads (None: torch's default)."""
    cache_dir: str | None = ".cpo_cache/embeddings"
    """Content-addressed embedding cache; None disables caching."""
    query_prefix: str | None = None
    """Text prepended to queries; None uses the model's known prefix (e.g. nomic 'search_query: ')."""
    prompt_prefix: str | None = None
    """Text prepended to prompts; None uses the model's known prefix."""


@dataclass
class PCAConfig:
    """Dimensionality reduction, fitted separately for queries (X) and prompts (T)."""

    query_components: int | float = 16
    """int: components for X; float in (0, 1): explained-variance target."""
    prompt_components: int | float | None = 32
    """int: components for T, capped at n_prompts - 1 (so a small prompt set is represented
    exactly: with fewer components a linear effect model cannot tell its prompts apart); float:
    explained-variance target; None: n_prompts - 1."""


__all__ = ["EmbedConfig", "PCAConfig"]
