"""The three row stages of generation, shared by the in-process loop and the Ray Data pipeline.

``render`` (CPU): query + prompt -> LLM input; ``EngineStage`` (GPU in production): LLM input ->
answer, tokens, latency, error; ``grade`` (CPU): answer + gold -> score. Each maps a batch given as
a ``pyarrow.Table`` (or a dict of columns) to a ``pyarrow.Table``, so the local executor and the
Ray Data ``map_batches`` stages run the very same code.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, Mapping, Sequence

import pyarrow as pa

from cpo_engine.generation.backends import BackendConfig
from cpo_engine.generation.graders import get_grader
from cpo_engine.generation.templating import TemplateConfig, build_request
from cpo_engine.generation.types import GenerationRequest, GenerationResponse, RowKey, SamplingConfig

#: Columns of a planned row (the input of ``render``).
PLAN_COLUMNS = ("run_id", "query_id", "query_text", "prompt_id", "prompt_text", "sample", "gold_answer", "task")

#: Schema of a generated row as stored in the shards.
ROW_SCHEMA = pa.schema([
    ("run_id", pa.string()), ("query_id", pa.string()), ("query_text", pa.string()),
    ("prompt_id", pa.string()), ("prompt_text", pa.string()), ("sample", pa.int64()),
    ("score", pa.float64()), ("task", pa.string()), ("model", pa.string()), ("backend", pa.string()),
    ("gold_answer", pa.string()), ("response_text", pa.string()), ("parsed_answer", pa.string()),
    ("grader", pa.string()), ("prompt_tokens", pa.int64()), ("completion_tokens", pa.int64()),
    ("cached_tokens", pa.int64()),
    ("latency_s", pa.float64()), ("finish_reason", pa.string()), ("error", pa.string()),
    ("generated_at", pa.timestamp("us", tz="UTC")),
])

#: Columns that are the same in every run of the same plan with a deterministic engine (latency,
#: time and prefix-cache hits depend on what ran before).
DETERMINISTIC_COLUMNS = tuple(c for c in ROW_SCHEMA.names if c not in ("latency_s", "generated_at", "cached_tokens"))


def _columns(batch: Any) -> dict[str, list[Any]]:
    return batch.to_pydict() if isinstance(batch, pa.Table) else {k: list(v) for k, v in batch.items()}


def _keys(cols: Mapping[str, list[Any]]) -> list[RowKey]:
    return [RowKey(str(r), str(q), str(p), int(s))
            for r, q, p, s in zip(cols["run_id"], cols["query_id"], cols["prompt_id"], cols["sample"])]


def render(batch: Any, template: TemplateConfig, sampling: SamplingConfig) -> pa.Table:
    """CPU stage: add ``input_text`` / ``input_messages`` (JSON) columns."""
    cols = _columns(batch)
    reqs = [build_request(template, k, q, p, sampling)
            for k, q, p in zip(_keys(cols), cols["query_text"], cols["prompt_text"])]
    cols["input_text"] = [r.text for r in reqs]
    cols["input_messages"] = [json.dumps(r.messages) if r.messages is not None else None for r in reqs]
    return pa.table(cols)


def requests_from(cols: Mapping[str, list[Any]], sampling: SamplingConfig) -> list[GenerationRequest]:
    """Rebuild requests from a rendered batch."""
    return [
        GenerationRequest(key=k, text=t, messages=tuple(json.loads(m)) if m is not None else None, sampling=sampling)
        for k, t, m in zip(_keys(cols), cols["input_text"], cols["input_messages"])
    ]


class EngineStage:
    """Engine stage: builds its backend once (``__init__``), answers a rendered batch per call.

    In the Ray pipeline this is an actor-pool stage (one vLLM engine per actor / GPU).
    """

    def __init__(self, backend: BackendConfig | Any, sampling: SamplingConfig) -> None:
        if isinstance(backend, BackendConfig):
            from cpo_engine.generation.backends import make_backend

            backend = make_backend(backend)
        self.backend = backend
        self.sampling = sampling

    def __call__(self, batch: Any) -> pa.Table:
        cols = _columns(batch)
        responses = self.backend.generate(requests_from(cols, self.sampling))
        cols.update(response_columns(responses))
        cols["model"] = [self.backend.model] * len(responses)
        cols["backend"] = [self.backend.name] * len(responses)
        return pa.table(cols)


def response_columns(responses: Sequence[GenerationResponse]) -> dict[str, list[Any]]:
    return {
        "response_text": [r.text for r in responses],
        "prompt_tokens": [r.prompt_tokens for r in responses],
        "completion_tokens": [r.completion_tokens for r in responses],
        "cached_tokens": [r.cached_tokens for r in responses],
        "latency_s": [r.latency_s for r in responses],
        "finish_reason": [r.finish_reason for r in responses],
        "error": [r.error for r in responses],
        "recorded_score": [r.recorded_score for r in responses],
    }


def _grade_one(
    grader: Any, text: str | None, gold: Any, recorded: float | None
) -> tuple[float, str | None, str | None]:
    """(score, parsed answer, error) for one row; grader failures become row errors."""
    if recorded is not None:
        return float(recorded), None, None
    if text is None:
        return math.nan, None, None
    try:
        return float(grader.grade(text, gold)), grader.extract(text), None
    except Exception as exc:  # noqa: BLE001 - a bad row must not fail the job
        return math.nan, None, f"grader {grader.name}: {type(exc).__name__}: {exc}"[:500]


def grade(batch: Any, grader_spec: str) -> pa.Table:
    """CPU stage: add ``score``, ``parsed_answer``, ``grader``; return rows in :data:`ROW_SCHEMA`."""
    cols = _columns(batch)
    grader = get_grader(grader_spec)
    out = [_grade_one(grader, t, g, rec)
           for t, g, rec in zip(cols["response_text"], cols["gold_answer"], cols["recorded_score"])]
    cols["score"] = [s for s, _, _ in out]
    cols["parsed_answer"] = [p for _, p, _ in out]
    cols["error"] = [e or ge for e, (_, _, ge) in zip(cols["error"], out)]
    cols["grader"] = ["recorded" if r is not None else grader.name for r in cols["recorded_score"]]
    now = time.time()
    cols["generated_at"] = [int(now * 1e6)] * len(out)
    arrays = {name: cols.get(name, [None] * len(out)) for name in ROW_SCHEMA.names}
    arrays["generated_at"] = pa.array(arrays["generated_at"], pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    return pa.table(arrays, schema=ROW_SCHEMA)


__all__ = ["PLAN_COLUMNS", "ROW_SCHEMA", "DETERMINISTIC_COLUMNS", "render", "requests_from", "EngineStage",
           "response_columns", "grade"]
