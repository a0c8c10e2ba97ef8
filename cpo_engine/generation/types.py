"""The one interface every LLM backend implements: a batch of requests in, responses out.

A :class:`GenerationRequest` carries its row key (run, query, prompt, sample), the rendered input
(completion text or chat messages) and the sampling parameters. A :class:`GenerationResponse`
carries the text, token counts, latency and, instead of raising, any per-request error, so one
bad row never fails a batch. Backends are constructed from a :class:`BackendConfig`.
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


@dataclass
class VLLMConfig:
    """Arguments of ``vllm.LLM`` (one engine per actor / GPU); ``None`` keeps vLLM's default.

    Attributes
    ----------
    dtype : str
        ``auto``, ``bfloat16``, ``float16`` or ``float32``.
    max_model_len : int or None
        Context length the engine reserves KV cache for.
    enforce_eager : bool
        Skip torch.compile / CUDA graphs: slower steady state, much faster start (tests, CPU).
    enable_prefix_caching : bool
        Reuse KV cache across requests that share a prefix (the builder orders requests for it).
    gpu_memory_utilization : float or None
        Share of GPU memory the engine may take.
    tensor_parallel_size : int
        GPUs one engine spans.
    max_num_seqs : int or None
        Sequences scheduled at once.
    extra : dict
        Further ``vllm.LLM`` keyword arguments, passed unchanged (Python API).
    """

    dtype: str = "auto"
    max_model_len: int | None = None
    enforce_eager: bool = False
    enable_prefix_caching: bool = True
    gpu_memory_utilization: float | None = None
    tensor_parallel_size: int = 1
    max_num_seqs: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def engine_kwargs(self) -> dict[str, Any]:
        kw = {k: v for k, v in asdict(self).items() if k != "extra" and v is not None}
        return kw | dict(self.extra)


@dataclass
class BackendConfig:
    """Which LLM backend to run and how to reach it.

    Attributes
    ----------
    kind : str
        ``"vllm"`` (offline ``vllm.LLM`` engine in this process or in Ray actors), ``"openai"``
        (any OpenAI-compatible HTTP server: vLLM serve, llama.cpp server, hosted APIs) or
        ``"replay"`` (recorded outcomes from a triplet table).
    model : str
        Model name or path (vLLM: path or hub id; OpenAI: the ``model`` field sent; replay: label).
    base_url : str
        OpenAI-compatible endpoint root, e.g. ``http://127.0.0.1:8000/v1``.
    api_key_env : str
        Name of the environment variable that holds the API key. The key itself is never stored in
        a config, logged or written to a manifest; an unset variable sends no Authorization header.
    max_concurrency : int
        Requests in flight at once (OpenAI backend).
    timeout_s : float
        Per-request timeout in seconds (OpenAI backend).
    max_retries : int
        Retries after a 429, a 5xx, a timeout or a connection error, with exponential backoff.
    backoff_s : float
        First backoff delay in seconds; doubles per retry (with jitter), capped at 30 s; a
        ``Retry-After`` header takes precedence.
    replay_path : str or None
        Triplet file or folder the replay backend serves from.
    replay_text_column : str
        Column with the recorded answer text (replay); missing values replay as empty text.
    vllm : VLLMConfig
        Engine arguments of the vLLM backend.
    num_engines : int
        vLLM engines (Ray actors) in the Ray Data engine stage; one per GPU.
    gpus_per_engine : float
        GPUs per engine actor (0 on CPU-only clusters).
    cpus_per_engine : float
        Logical CPUs each engine actor reserves; keep it below the node's CPUs so read and
        templating tasks are never starved.
    """

    kind: str = "openai"
    model: str = "default"
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key_env: str = "OPENAI_API_KEY"
    max_concurrency: int = 8
    timeout_s: float = 60.0
    max_retries: int = 4
    backoff_s: float = 0.5
    replay_path: str | None = None
    replay_text_column: str = "raw_answer"
    vllm: VLLMConfig = field(default_factory=VLLMConfig)
    num_engines: int = 1
    gpus_per_engine: float = 0.0
    cpus_per_engine: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in ("vllm", "openai", "replay"):
            raise ConfigError(f"backend.kind must be 'vllm', 'openai' or 'replay', got '{self.kind}'")
        for name in ("max_concurrency", "num_engines"):
            if getattr(self, name) < 1:
                raise ConfigError(f"backend.{name} must be >= 1, got {getattr(self, name)}")
        if self.timeout_s <= 0 or self.max_retries < 0 or self.backoff_s < 0:
            raise ConfigError("backend.timeout_s must be > 0, max_retries and backoff_s >= 0")
        if self.kind == "replay" and not self.replay_path:
            raise ConfigError("backend.kind='replay' needs backend.replay_path (a triplet file or folder)")


__all__ = [
    "SamplingConfig", "RowKey", "GenerationRequest", "GenerationResponse", "Backend", "BackendConfig",
    "VLLMConfig",
]
