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
from typing import Any, Sequence

from cpo_engine.generation.types import BackendConfig, GenerationRequest, GenerationResponse
from cpo_engine.utils import require


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
    config : BackendConfig
        ``model`` is a local path or hub id; ``config.vllm`` holds the engine arguments
        (prefix caching on by default).
    """

    name = "vllm"

    def __init__(self, config: BackendConfig) -> None:
        _cpu_defaults()
        vllm = require("vllm", extra="vllm")
        self.config = config
        self.model = config.model
        self._llm = vllm.LLM(model=config.model, **config.vllm.engine_kwargs())
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


__all__ = ["VLLMBackend"]
