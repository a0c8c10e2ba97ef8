"""vLLM backend: an offline ``vllm.LLM`` engine in this process (or in a Ray actor, one per GPU).

Requests are sent to the engine as one batch per call (vLLM schedules them continuously), with
one ``SamplingParams`` per request so every row keeps its own seed. When the engine rejects a
batch (e.g. one input longer than ``max_model_len``) the batch is retried row by row, so the error
lands on the offending row only. Prefix caching is on by default: the builder orders requests so
rows sharing a prefix are adjacent.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from cpo_engine.exceptions import ConfigError
from cpo_engine.generation.types import GenerationRequest, GenerationResponse
from cpo_engine.utils import require


@dataclass
class VLLMConfig:
    """Arguments of ``vllm.LLM`` (the ``backend.vllm`` section; one engine per actor / GPU); ``None``
    keeps vLLM's default.

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

    def __post_init__(self) -> None:
        if self.tensor_parallel_size < 1:
            raise ConfigError(f"backend.vllm.tensor_parallel_size must be >= 1, got {self.tensor_parallel_size}")

    def check(self) -> None:
        """Checks that apply only when this backend is the one chosen (none here)."""

    def engine_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``vllm.LLM``: the set fields, then ``extra``."""
        kw = {k: v for k, v in asdict(self).items() if k != "extra" and v is not None}
        return kw | dict(self.extra)


def _cpu_defaults() -> None:
    """On CPU-only hosts run the engine core in-process (no spawn of ``__main__``) with a KV budget."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover - vllm always brings torch
        has_cuda = False
    if not has_cuda:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")


class VLLMBackend:
    """Offline vLLM engine behind the :class:`~cpo_engine.generation.types.Backend` interface.

    Parameters
    ----------
    config : VLLMConfig
        Engine arguments (prefix caching on by default).
    model : str
        Local path or hub id of the weights.
    """

    name = "vllm"

    def __init__(self, config: VLLMConfig, model: str) -> None:
        _cpu_defaults()
        vllm = require("vllm", extra="vllm")
        self.config = config
        self.model = model
        self._llm = vllm.LLM(model=model, **config.engine_kwargs())
        self._sampling_cls = vllm.SamplingParams

    def close(self) -> None:
        self._llm = None

    def reset_prefix_cache(self) -> None:
        """Forget cached prefixes (benchmarks: a second run must not reuse the first one's cache)."""
        self._llm.reset_prefix_cache()

    def _params(self, req: GenerationRequest) -> Any:
        s = req.sampling
        return self._sampling_cls(
            temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens,
            stop=list(s.stop) or None, seed=req.seed, **s.extra,
        )

    def _run(self, reqs: Sequence[GenerationRequest]) -> list[Any]:
        params = [self._params(r) for r in reqs]
        if reqs[0].messages is not None:
            return self._llm.chat([list(r.messages or ()) for r in reqs], params, use_tqdm=False)
        return self._llm.generate([r.text for r in reqs], params, use_tqdm=False)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResponse]:
        """Answer every request in order; chat and completion requests are run as two batches."""
        out: dict[int, GenerationResponse] = {}
        for is_chat in (False, True):
            idx = [i for i, r in enumerate(requests) if (r.messages is not None) == is_chat]
            if idx:
                for i, resp in zip(idx, self._batch([requests[i] for i in idx])):
                    out[i] = resp
        return [out[i] for i in range(len(requests))]

    def _batch(self, reqs: list[GenerationRequest]) -> list[GenerationResponse]:
        t0 = time.perf_counter()
        try:
            results = self._run(reqs)
        except Exception as exc:  # noqa: BLE001 - isolate the failing row(s)
            if len(reqs) == 1:
                return [GenerationResponse(key=reqs[0].key, text=None, error=f"{type(exc).__name__}: {exc}"[:500])]
            return [r for req in reqs for r in self._batch([req])]
        # vLLM finishes a batch together: per-row latency is the batch wall time.
        latency = time.perf_counter() - t0
        return [_response(req, res, latency) for req, res in zip(reqs, results)]


def _response(req: GenerationRequest, res: Any, latency: float) -> GenerationResponse:
    comp = res.outputs[0]
    return GenerationResponse(
        key=req.key, text=comp.text, prompt_tokens=len(res.prompt_token_ids or ()),
        completion_tokens=len(comp.token_ids), latency_s=latency, finish_reason=comp.finish_reason,
        cached_tokens=getattr(res, "num_cached_tokens", None),
    )


__all__ = ["VLLMBackend", "VLLMConfig"]
