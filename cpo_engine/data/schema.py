"""The triplet contract: one row is one graded LLM answer to (query, prompt)."""

from __future__ import annotations

import pyarrow as pa

REQUIRED: dict[str, pa.DataType] = {
    "query_id": pa.string(),
    "query_text": pa.string(),
    "prompt_id": pa.string(),
    "prompt_text": pa.string(),
    "score": pa.float64(),
}
OPTIONAL: dict[str, pa.DataType] = {
    "task": pa.string(),
    "model": pa.string(),
    "sample": pa.int64(),
    "propensity": pa.float64(),
    "weight": pa.float64(),
    "logged_at": pa.timestamp("us"),
    "run_id": pa.string(),
}
ID_COLUMNS = ("query_id", "prompt_id")
TEXT_COLUMNS = ("query_text", "prompt_text")

# Names people use for the required columns in their own logs, for "did you mean" hints.
ALIASES: dict[str, tuple[str, ...]] = {
    "query_id": ("qid", "question_id", "query", "id", "item_id", "example_id"),
    "query_text": ("query", "question", "input", "question_text", "text", "problem"),
    "prompt_id": ("pid", "prompt", "instruction_id", "prompt_name", "template_id"),
    "prompt_text": ("prompt", "instruction", "prompt_str", "template", "system_prompt"),
    "score": ("reward", "label", "correct", "accuracy", "y", "outcome", "is_correct", "result"),
}

TRIPLET_SCHEMA = pa.schema([pa.field(n, t, nullable=False) for n, t in REQUIRED.items()])

__all__ = ["REQUIRED", "OPTIONAL", "ID_COLUMNS", "TEXT_COLUMNS", "ALIASES", "TRIPLET_SCHEMA"]
