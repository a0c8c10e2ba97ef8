"""The vocabulary shared by edit analysis (cpo_engine.edits) and the search (cpo_engine.search).

- Edit families follow arXiv 2605.26655's grouping of prompt edits. Names here are the keys used in
  edit prior files, search traces and reports.
- Prompt identity: :func:`dedup_key` decides when two prompt texts are the same prompt and
  :func:`candidate_id` names it. It lives here, below both rooms, because edits reads search traces
  (whose ids it must reproduce) and must not import the search.
"""

from __future__ import annotations

import hashlib
import re

EDIT_FAMILIES: dict[str, str] = {
    "step_by_step": "asks for explicit step-by-step reasoning",
    "meta_cognitive": "asks the model to reflect on its own reasoning or confidence",
    "meta_instruction": "instructions about how to follow instructions (rules, priorities, role of the prompt)",
    "complexity": "adds constraints, requirements or elaborate detail that make the prompt harder",
    "persona": "assigns a persona, expert role or panel of experts",
    "decomposition": "asks to break the problem into sub-problems",
    "answer_format": "prescribes the format of the final answer",
    "verification": "asks to check or verify the answer",
    "conciseness": "simplifies or shortens the prompt",
    "recombination": "combines parts of two parent prompts",
    "worked_examples": "adds worked examples (few-shot demonstrations: a question and its answer)",
}

_SPACE = re.compile(r"\s+")


def dedup_key(text: str) -> str:
    """Texts that differ only in case or whitespace are the same candidate."""
    return _SPACE.sub(" ", text).strip().lower()


def candidate_id(text: str) -> str:
    """A stable id: ``c`` + 12 hex digits of the SHA-256 of the dedup key."""
    return "c" + hashlib.sha256(dedup_key(text).encode("utf-8")).hexdigest()[:12]


__all__ = ["EDIT_FAMILIES", "candidate_id", "dedup_key"]
