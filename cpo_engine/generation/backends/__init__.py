"""LLM backends behind one interface (:class:`~cpo_engine.generation.types.Backend`)."""

from __future__ import annotations

from typing import Any

from cpo_engine.generation.types import Backend, BackendConfig


def make_backend(config: BackendConfig, **kwargs: Any) -> Backend:
    """Construct the backend named by ``config.kind`` (heavy imports happen only here)."""
    if config.kind == "vllm":
        from cpo_engine.generation.backends.vllm_engine import VLLMBackend

        return VLLMBackend(config)
    if config.kind == "openai":
        from cpo_engine.generation.backends.openai_http import OpenAIBackend

        return OpenAIBackend(config)
    from cpo_engine.generation.backends.replay import ReplayBackend

    return ReplayBackend(config, **kwargs)


__all__ = ["make_backend"]
