"""Edit families: one vocabulary shared by edit analysis (cpo_engine.edits) and the proposers.

Families follow arXiv 2605.26655's grouping of prompt edits. Names here are the keys used in edit
prior files, search traces and reports.
"""

from __future__ import annotations

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
}

__all__ = ["EDIT_FAMILIES"]
