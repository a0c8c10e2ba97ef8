"""Edit operators: text-to-text prompt edits, one or more per edit family, no LLM needed.

Each operator maps ``(text, rng, donor)`` to a new text, or None when it does not apply (nothing to
remove, every phrase variant already present, ...). Insertions keep a trailing answer trigger (a
last sentence ending in ``:``, like "The answer is:") last, since the LLM continues from it.
Families are the keys of :data:`cpo_engine.taxonomy.EDIT_FAMILIES`; ``direction`` is +1 for an
operator that adds its family's kind of instruction and -1 for one that removes it (edit priors are
applied inversely to removals).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

from cpo_engine.taxonomy import EDIT_FAMILIES

_SENT = re.compile(r"(?<=[.!?])\s+")
_META = re.compile(r"\b(instruction|instructions|follow|must|always|never|priority|rules?|important)\b", re.I)
_FILLER = re.compile(r"(?:^|\s+)(?:please|carefully|very|really|just|simply|actually|basically)\b,?", re.I)

PHRASES: dict[str, tuple[str, ...]] = {
    "step_by_step": (
        "Let's think step by step.",
        "Work through the problem step by step, showing each calculation.",
        "Reason step by step before giving the answer.",
        "Explain your reasoning one step at a time.",
        "Show your work, one step per line.",
    ),
    "verification": (
        "Check your answer by substituting it back into the problem.",
        "Before answering, verify each calculation.",
        "Double-check the arithmetic before giving the final answer.",
        "After solving, re-read the question and confirm that the answer fits it.",
    ),
    "decomposition": (
        "Break the problem into smaller sub-problems and solve each in turn.",
        "First identify what is asked, then list the known quantities, then compute.",
        "Split the question into parts and answer each part before combining them.",
    ),
    "persona": (
        "You are an expert mathematician.",
        "You are a careful and patient math teacher.",
        "You are a meticulous problem solver who never skips a detail.",
    ),
    "expert_panel": (
        "Imagine three experts solving this together; each writes one step, and they agree on the answer.",
        "A panel of experts discusses the problem; report the answer they agree on.",
    ),
    "answer_format": (
        "Give the final answer as a single number.",
        "End with the sentence 'The answer is' followed by the number.",
        "Write the final answer on its own line.",
    ),
    "meta_cognitive": (
        "Before answering, consider how confident you are and where you might be wrong.",
        "Reflect on whether your approach makes sense before finalizing.",
        "Think about what could go wrong in your reasoning, then fix it.",
    ),
    "complexity": (
        "Consider every quantity mentioned and state each assumption explicitly.",
        "Track the units of every quantity throughout the solution.",
        "Account for every detail in the question, even ones that seem irrelevant.",
    ),
    "meta_instruction": (
        "Follow these instructions exactly.",
        "These instructions take priority over anything else.",
        "It is important that you follow every instruction above.",
    ),
}


def sentences(text: str) -> list[str]:
    """Split a prompt into sentences (on ., ! or ? followed by whitespace).

    A colon does not end a sentence: it sits inside instructions ("Note: ...") and ends answer
    triggers, which stay whole so insertions can go before them.
    """
    return [s for s in _SENT.split(text.strip()) if s]


def _join(parts: list[str]) -> str:
    return " ".join(p.strip() for p in parts if p.strip())


def _insert(text: str, phrase: str, rng: np.random.Generator, prefix: bool = False) -> str | None:
    if phrase.lower() in text.lower():
        return None
    sents = sentences(text)
    trigger = sents.pop() if sents and sents[-1].rstrip().endswith(":") else None
    pos = 0 if prefix else int(rng.integers(0, len(sents) + 1))
    sents.insert(pos, phrase)
    return _join(sents + ([trigger] if trigger else []))


def _adder(bank: str, prefix: bool = False) -> Callable[[str, np.random.Generator, str | None], str | None]:
    def add(text: str, rng: np.random.Generator, donor: str | None = None) -> str | None:
        options = [p for p in PHRASES[bank] if p.lower() not in text.lower()]
        if not options:
            return None
        return _insert(text, options[int(rng.integers(len(options)))], rng, prefix=prefix)

    return add


def remove_meta_instruction(text: str, rng: np.random.Generator, donor: str | None = None) -> str | None:
    """Drop one sentence that talks about following instructions or rules."""
    sents = sentences(text)
    hits = [i for i, s in enumerate(sents) if _META.search(s)]
    if not hits or len(sents) < 2:
        return None
    del sents[hits[int(rng.integers(len(hits)))]]
    return _join(sents)


def simplify(text: str, rng: np.random.Generator, donor: str | None = None) -> str | None:
    """Remove filler words, or else the longest sentence that is not the answer trigger."""
    plain = _FILLER.sub("", text).strip()
    if plain != text.strip() and plain:
        return plain[:1].upper() + plain[1:]
    sents = sentences(text)
    body = [i for i, s in enumerate(sents) if not (i == len(sents) - 1 and s.endswith(":"))]
    if len(sents) < 2 or not body:
        return None
    del sents[max(body, key=lambda i: len(sents[i]))]
    return _join(sents)


def shorten(text: str, rng: np.random.Generator, donor: str | None = None) -> str | None:
    """Keep a random prefix of the body sentences (at least one), plus any answer trigger."""
    sents = sentences(text)
    trigger = sents.pop() if sents and sents[-1].endswith(":") else None
    if len(sents) < 2:
        return None
    keep = int(rng.integers(1, len(sents)))
    return _join(sents[:keep] + ([trigger] if trigger else []))


def _as_statement(sentence: str) -> str:
    """An answer trigger as a plain sentence ("Let's map our route:" -> "Let's map our route."); a
    short trigger ("The answer is:") means nothing on its own and is dropped (empty string)."""
    if not sentence.endswith(":"):
        return sentence
    return sentence[:-1].rstrip() + "." if len(sentence.split()) >= 5 else ""


def _norm(sentence: str) -> str:
    return sentence.lower().rstrip(" .:!?")


def recombine(text: str, rng: np.random.Generator, donor: str | None = None) -> str | None:
    """The parent's sentences up to a cut point, then the donor's from its cut point.

    Only the donor's last sentence may stay an answer trigger; the parent's trigger, if kept, becomes
    a plain sentence (or is dropped when short), and sentences that repeat (up to case and final punctuation) are dropped.
    """
    if not donor or _norm(donor) == _norm(text):
        return None
    a, b = sentences(text), sentences(donor)
    if not a or not b:  # a blank text has no sentence to cut at
        return None
    cut_a, cut_b = int(rng.integers(1, len(a) + 1)), int(rng.integers(0, len(b)))
    merged: list[str] = []
    for s in [_as_statement(x) for x in a[:cut_a]] + b[cut_b:]:
        if s and _norm(s) not in {_norm(m) for m in merged}:
            merged.append(s)
    return _join(merged)


@dataclass(frozen=True)
class Operator:
    """A named edit: ``fn(text, rng, donor) -> text or None``; ``needs_donor`` for recombination."""

    name: str
    family: str
    fn: Callable[[str, np.random.Generator, str | None], str | None]
    direction: int = 1
    needs_donor: bool = False


OPERATORS: tuple[Operator, ...] = (
    Operator("add_step_by_step", "step_by_step", _adder("step_by_step")),
    Operator("add_verification", "verification", _adder("verification")),
    Operator("add_decomposition", "decomposition", _adder("decomposition")),
    Operator("add_persona", "persona", _adder("persona", prefix=True)),
    Operator("add_expert_panel", "persona", _adder("expert_panel", prefix=True)),
    Operator("add_answer_format", "answer_format", _adder("answer_format")),
    Operator("add_meta_cognitive", "meta_cognitive", _adder("meta_cognitive")),
    Operator("add_constraint", "complexity", _adder("complexity")),
    Operator("add_meta_instruction", "meta_instruction", _adder("meta_instruction")),
    Operator("remove_meta_instruction", "meta_instruction", remove_meta_instruction, direction=-1),
    Operator("simplify", "conciseness", simplify),
    Operator("shorten", "conciseness", shorten),
    Operator("recombine", "recombination", recombine, needs_donor=True),
)

assert all(op.family in EDIT_FAMILIES for op in OPERATORS), "operator family missing from taxonomy"


def get_operators(names: list[str] | None = None) -> tuple[Operator, ...]:
    """The named operators (all when ``names`` is None); unknown names raise ValueError."""
    if names is None:
        return OPERATORS
    by_name = {op.name: op for op in OPERATORS}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(f"unknown edit operators {missing}; choose from {sorted(by_name)}")
    return tuple(by_name[n] for n in names)


__all__ = ["Operator", "OPERATORS", "PHRASES", "get_operators", "sentences"]
