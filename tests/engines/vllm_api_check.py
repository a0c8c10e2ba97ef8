"""Run by tests/engines/test_vllm.py with the .venv-vllm interpreter: drives VLLMBackend directly and
prints one JSON line of facts for the test to check. Not collected by pytest (no test_ prefix)."""

from __future__ import annotations

import json
import sys

from cpo_engine.generation.backends.vllm_engine import VLLMBackend, VLLMConfig
from cpo_engine.generation.types import GenerationRequest, RowKey, SamplingConfig


def main(model: str) -> None:
    backend = VLLMBackend(VLLMConfig(enforce_eager=True, max_model_len=256, dtype="bfloat16"), model=model)
    hot = SamplingConfig(temperature=1.0, top_p=0.95, max_tokens=12, seed=5)
    greedy = SamplingConfig(temperature=0.0, max_tokens=12)
    chat = ({"role": "user", "content": "What is 2 + 3?"},)
    reqs = [
        GenerationRequest(key=RowKey("r", "q1", "p", 0), messages=chat, sampling=greedy),
        GenerationRequest(key=RowKey("r", "q1", "p", 0), messages=chat, sampling=hot),
        GenerationRequest(key=RowKey("r", "q1", "p", 0), messages=chat, sampling=hot),  # same key: same seed
        GenerationRequest(key=RowKey("r", "q1", "p", 1), messages=chat, sampling=hot),  # next sample
        GenerationRequest(key=RowKey("r", "q2", "p", 0), text="The capital of France is", sampling=greedy),
        GenerationRequest(key=RowKey("r", "q3", "p", 0), text="word " * 400, sampling=greedy),  # > max_model_len
    ]
    out = backend.generate(reqs)
    print(json.dumps([{"text": r.text, "error": r.error, "prompt_tokens": r.prompt_tokens,
                       "completion_tokens": r.completion_tokens, "finish_reason": r.finish_reason,
                       "query_id": r.key.query_id} for r in out]))


if __name__ == "__main__":
    main(sys.argv[1])
