"""How a query and a prompt become one LLM input, and prefix-aware request ordering.

The prompt can go before the query (``prefix``), after it (``suffix``, how the Prompt-OIRL logs
were made: ``"{query}{prompt}"``), or into the system message (``system``, chat only). The input is
either one completion string or a list of chat messages. ``format`` overrides the layout with a
``str.format`` template over ``{query}`` and ``{prompt}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from cpo_engine.exceptions import ConfigError
from cpo_engine.generation.types import GenerationRequest, RowKey, SamplingConfig


POSITIONS = ("suffix", "prefix", "system")


@dataclass(frozen=True)
class TemplateConfig:
    """Layout of the LLM input.

    Attributes
    ----------
    position : str
        ``"suffix"`` (query then prompt), ``"prefix"`` (prompt then query) or ``"system"`` (the
        prompt is the system message; chat only).
    mode : str
        ``"chat"`` (a list of messages) or ``"completion"`` (one string).
    separator : str
        Put between query and prompt (``"\\n"`` by default; Prompt-OIRL svamp/mawps used ``""``).
    format : str or None
        A ``str.format`` template over ``{query}`` and ``{prompt}``; overrides position/separator.
    system : str or None
        A fixed system message (chat mode, positions prefix/suffix).
    """

    position: str = field(default="suffix", metadata={"choices": POSITIONS})
    mode: str = field(default="chat", metadata={"choices": ("chat", "completion")})
    separator: str = "\n"
    format: str | None = None
    system: str | None = None

    def __post_init__(self) -> None:
        if self.position not in POSITIONS:
            raise ConfigError(f"template.position must be prefix, suffix or system, got '{self.position}'")
        if self.mode not in ("chat", "completion"):
            raise ConfigError(f"template.mode must be chat or completion, got '{self.mode}'")
        if self.position == "system" and self.mode != "chat":
            raise ConfigError("template.position='system' needs template.mode='chat'")
        if self.format is not None:
            try:
                self.format.format(query="q", prompt="p")
            except (KeyError, IndexError, ValueError) as exc:
                raise ConfigError(
                    f"template.format must use only {{query}} and {{prompt}} fields, got {self.format!r} ({exc})"
                ) from exc


def render_user(cfg: TemplateConfig, query: str, prompt: str) -> str:
    """The user-turn text (or the whole completion input)."""
    if cfg.format is not None:
        return cfg.format.format(query=query, prompt=prompt)
    if cfg.position == "system":
        return query
    if cfg.position == "prefix":
        return f"{prompt}{cfg.separator}{query}" if prompt else query
    return f"{query}{cfg.separator}{prompt}" if prompt else query


def build_request(
    cfg: TemplateConfig, key: RowKey, query: str, prompt: str, sampling: SamplingConfig
) -> GenerationRequest:
    """Render one (query, prompt, sample) cell into a request."""
    user = render_user(cfg, query, prompt)
    if cfg.mode == "completion":
        return GenerationRequest(key=key, text=user, sampling=sampling)
    system = prompt if cfg.position == "system" else cfg.system
    messages = ({"role": "system", "content": system},) if system else ()
    return GenerationRequest(key=key, messages=messages + ({"role": "user", "content": user},), sampling=sampling)


def prefix_order(texts: Sequence[str]) -> np.ndarray:
    """A permutation that puts inputs sharing the longest prefix next to each other.

    Lexicographic order is a depth-first walk of the prefix trie, so every pair of adjacent inputs
    shares the longest prefix any neighbour could: an engine with a prefix cache (vLLM automatic
    prefix caching, llama.cpp's slot cache) recomputes only the part after the shared prefix.
    Ties keep their input order (stable), so the order is deterministic.
    """
    return np.array(sorted(range(len(texts)), key=texts.__getitem__), dtype=np.int64)


def shared_prefix_chars(texts: Sequence[str]) -> int:
    """Characters shared with the previous input, summed over a sequence: what ordering saves."""
    total = 0
    for a, b in zip(texts, texts[1:]):
        n = min(len(a), len(b))
        i = 0
        while i < n and a[i] == b[i]:
            i += 1
        total += i
    return total


__all__ = ["TemplateConfig", "render_user", "build_request", "prefix_order", "shared_prefix_chars"]
