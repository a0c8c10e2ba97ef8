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
    executor: str = "auto"
    """Where texts missing from the cache are embedded: 'local' (this process), 'ray' (a Ray Data actor
    pool; a local Ray starts when none is attached) or 'auto' (Ray when this process is attached to a
    Ray cluster, e.g. inside a Ray job, and a call has at least ``ray_min_texts`` texts; else local)."""
    ray_actors: int | None = None
    """Encoder actors; None: one per GPU on a GPU cluster, else one per ``ray_cpus_per_actor`` CPUs
    (less one CPU for the driver's read tasks)."""
    ray_cpus_per_actor: float = 1.0
    """Logical CPUs per encoder actor (fractions allowed; its torch threads are max(1, floor))."""
    ray_gpus_per_actor: float | None = None
    """GPUs per encoder actor; None: 1 when the cluster has GPUs, else 0."""
    ray_batch_size: int = 256
    """Texts per actor call."""
    ray_min_texts: int = 4096
    """With executor 'auto', calls with fewer texts to embed stay in-process (each Ray call loads the
    model once per actor: seconds)."""

    def __post_init__(self) -> None:
        from cpo_engine.exceptions import ConfigError

        if self.executor not in ("auto", "local", "ray"):
            raise ConfigError(f"embed.executor must be 'auto', 'local' or 'ray', got '{self.executor}'")
        if (self.ray_actors is not None and self.ray_actors < 1) or self.ray_batch_size < 1 \
                or self.ray_cpus_per_actor <= 0 or self.ray_min_texts < 0:
            raise ConfigError("embed.ray_actors and embed.ray_batch_size must be >= 1, embed.ray_cpus_per_actor > 0 "
                              "and embed.ray_min_texts >= 0")


@dataclass
class PCAConfig:
    """Dimensionality reduction, fitted separately for queries (X) and prompts (T)."""

    query_components: int | float = 16
    """int: components for X; float in (0, 1): explained-variance target."""
    prompt_components: int | float | None = 32
    """int: components for T, capped at n_prompts - 1 (so a small prompt set is represented
    exactly: with fewer components a linear effect model cannot tell its prompts apart); float:
    explained-variance target; None: n_prompts - 1."""
    backend: str = "torch"
    """'torch' (TorchPCA on CPU or CUDA) or 'cuml' (its cuML twin on the GPU, the ``cuml`` extra; the
    fitted state is a TorchPCA either way, so bundles never need cuML)."""

    def __post_init__(self) -> None:
        if self.backend not in ("torch", "cuml"):
            from cpo_engine.exceptions import ConfigError

            raise ConfigError(f"pca.backend must be 'torch' or 'cuml', got '{self.backend}'")


__all__ = ["EmbedConfig", "PCAConfig"]
