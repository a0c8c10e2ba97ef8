"""The one interface every LLM backend implements: a batch of requests in, responses out.

A :class:`GenerationRequest` carries its row key (run, query, prompt, sample), the rendered input
(completion text or chat messages) and the sampling parameters. A :class:`GenerationResponse`
carries the text, token counts, latency and, instead of raising, any per-request error, so one
bad row never fails a batch. Backends and their configs live in :mod:`cpo_engine.generation.backends`.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

from cpo_engine.exceptions import ConfigError


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling parameters, passed through to the engine or server.

    Attributes
    ----------
    temperature : float
        Softmax temperature; 0 is greedy decoding.
    top_p : float
        Nucleus sampling mass in (0, 1].
    max_tokens : int
        Most tokens generated per request; also the per-call token bound used for budget projection.
    stop : tuple of str
        Strings that end generation.
    seed : int or None
        Base seed. Each request gets ``seed`` mixed with its row key, so a rerun (or a resumed run)
        asks the engine for exactly the same sample.
    extra : dict
        Further engine-specific parameters, passed through unchanged (e.g. ``{"top_k": 40}``).
    """

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: list[str] | tuple[str, ...] = ()
    seed: int | None = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ConfigError(f"sampling.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"sampling.top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ConfigError(f"sampling.max_tokens must be >= 1, got {self.max_tokens}")
        object.__setattr__(self, "stop", tuple(self.stop))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RowKey:
    """Identity of one generated row; checkpoint/resume is keyed by it."""

    run_id: str
    query_id: str
    prompt_id: str
    sample: int

    def seed(self, base: int | None) -> int | None:
        """A per-row seed: stable across processes and reruns (not Python's salted ``hash``)."""
        if base is None:
            return None
        text = f"{base}\x1f{self.run_id}\x1f{self.query_id}\x1f{self.prompt_id}\x1f{self.sample}"
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") & 0x7FFFFFFF


@dataclass(frozen=True)
class GenerationRequest:
    """One LLM call. Exactly one of ``text`` (completion) and ``messages`` (chat) is set."""

    key: RowKey
    text: str | None = None
    messages: tuple[dict[str, str], ...] | None = None
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    def __post_init__(self) -> None:
        if (self.text is None) == (self.messages is None):
            raise ConfigError("a GenerationRequest needs exactly one of `text` and `messages`")

    @property
    def seed(self) -> int | None:
        return self.key.seed(self.sampling.seed)

    def prefix_text(self) -> str:
        """The rendered input as one string: what prefix ordering sorts on."""
        if self.text is not None:
            return self.text
        return "".join(f"<|{m['role']}|>{m['content']}" for m in self.messages or ())


@dataclass
class GenerationResponse:
    """The outcome of one request; ``error`` is set (and ``text`` is None) when the call failed."""

    key: RowKey
    text: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    finish_reason: str | None = None
    error: str | None = None
    recorded_score: float | None = None
    cached_tokens: int | None = None


@runtime_checkable
class Backend(Protocol):
    """What the triplet builder needs from an LLM backend."""

    name: str
    model: str

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResponse]:
        """Answer every request, in order; failures are reported per response, never raised."""
        ...

    def close(self) -> None:
        ...


__all__ = ["SamplingConfig", "RowKey", "GenerationRequest", "GenerationResponse", "Backend"]
