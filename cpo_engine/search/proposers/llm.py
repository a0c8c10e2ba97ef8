"""Proposers: make child prompts from parent prompts, deduplicated, with lineage.

- :class:`EditProposer` applies edit operators (:mod:`cpo_engine.search.operators`), sampled with
  weights from an edit prior (arXiv 2605.26655) for the task at hand. No LLM; deterministic under a
  seed: the children of a parent depend only on (seed, round, parent id, donor pool).
- :class:`LLMProposer` asks an LLM (any :class:`cpo_engine.generation.types.Backend`, e.g. the
  OpenAI-compatible client for a local llama.cpp server) to rewrite a parent prompt, telling it what
  the causal model found strong and weak about it.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from cpo_engine.exceptions import ConfigError
from cpo_engine.search.candidates import Candidate, unique
from cpo_engine.search.operators import Operator, get_operators

PRIOR_FORMAT = "cpo-edit-prior/1"  # see cpo_engine.edits.prior


@dataclass(frozen=True)
class Feedback:
    """What the causal model says about a parent prompt, for the LLM proposer's meta-prompt.

    Attributes
    ----------
    summary : str
        One line, e.g. "predicted uplift +0.031 (95% CI -0.004 to +0.066) over the reference".
    strong : list of str
        Example queries on which the prompt is predicted to do best.
    weak : list of str
        Example queries on which it is predicted to do worst.
    hints : list of str
        Edit families that tend to help or hurt on this task (from the edit prior).
    """

    summary: str = ""
    strong: list[str] = field(default_factory=list)
    weak: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)


class Proposer(Protocol):
    """Anything that turns parents into children (the beam search's only need)."""

    def propose(self, parents: Sequence[Candidate], n_children: int, *, round: int,
                seen: set[str] | None = None,
                feedback: dict[str, Feedback] | None = None) -> list[Candidate]:
        ...


@dataclass(frozen=True)
class EditPrior:
    """Per-task sampling weights of edit families (file format ``cpo-edit-prior/1``, written by
    :mod:`cpo_engine.edits.prior`, whose validation this reuses).

    A weight of 1 is neutral; above 1 the family's operators are proposed more often, below 1 less
    (0 never). Operators that remove a family's kind of instruction get the inverse weight.
    """

    default: dict[str, float] = field(default_factory=dict)
    tasks: dict[str, dict[str, float]] = field(default_factory=dict)
    source: str = "<memory>"

    def weights(self, task: str | None) -> dict[str, float]:
        """Family weights for ``task``: its table if listed, else ``default``; 1.0 where unlisted."""
        from cpo_engine.edits.prior import prior_weights

        return prior_weights({"default": self.default, "tasks": self.tasks}, task)

    @classmethod
    def load(cls, path: str | Path) -> "EditPrior":
        """Read and validate an edit-prior JSON file; errors name the file and the bad key."""
        from cpo_engine.edits.prior import load_edit_prior

        return cls.from_dict(load_edit_prior(path), source=str(path))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "<memory>") -> "EditPrior":
        from cpo_engine.edits.prior import validate_edit_prior

        doc = validate_edit_prior(raw, source)
        return cls(default={k: float(v) for k, v in (doc.get("default") or {}).items()},
                   tasks={t: {k: float(v) for k, v in w.items()} for t, w in (doc.get("tasks") or {}).items()},
                   source=source)


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


class EditProposer:
    """Children by edit operators sampled with edit-prior weights; no LLM.

    Parameters
    ----------
    prior : EditPrior, optional
        Family weights; None means every family weighs 1.
    task : str, optional
        Which task's weights of the prior to use.
    operators : list of str, optional
        Operator names to use (default: all of :data:`cpo_engine.search.operators.OPERATORS`).
    seed : int
        Base seed; the same seed, round and parents give the same children.
    max_words : int
        Children longer than this are dropped.
    max_tries : int
        Attempts per requested child before a parent is declared exhausted.
    """

    def __init__(self, prior: EditPrior | None = None, task: str | None = None,
                 operators: list[str] | None = None, seed: int = 0, max_words: int = 120,
                 max_tries: int = 8) -> None:
        self.prior, self.task, self.operators = prior, task, operators
        self.seed, self.max_words, self.max_tries = seed, max_words, max_tries

    def operator_weights(self) -> tuple[tuple[Operator, ...], np.ndarray]:
        """The operators and their normalized sampling probabilities."""
        ops = get_operators(self.operators)
        fam = (self.prior or EditPrior()).weights(self.task)
        w = np.array([_op_weight(fam[op.family], op.direction) for op in ops])
        if not np.any(w > 0):
            raise ConfigError("every edit operator has weight 0 under the edit prior: nothing to propose")
        return ops, w / w.sum()

    def propose(self, parents: Sequence[Candidate], n_children: int, *, round: int,
                seen: set[str] | None = None, feedback: dict[str, Feedback] | None = None) -> list[Candidate]:
        """Up to ``n_children`` new, distinct children per parent (fewer if the parent is exhausted)."""
        ops, p = self.operator_weights()
        taken = set(seen or ()) | {c.key for c in parents}
        out: list[Candidate] = []
        for parent in parents:
            rng = np.random.default_rng([self.seed, round, _stable_int(parent.id)])
            donors = [c for c in parents if c.key != parent.key]
            kids = self._children(parent, donors, ops, p, rng, n_children, round, taken)
            taken.update(k.key for k in kids)
            out.extend(kids)
        return out

    def _children(self, parent: Candidate, donors: list[Candidate], ops: tuple[Operator, ...], p: np.ndarray,
                  rng: np.random.Generator, n: int, round: int, taken: set[str]) -> list[Candidate]:
        kids: list[Candidate] = []
        keys: set[str] = set()
        for _ in range(n * self.max_tries):
            if len(kids) >= n:
                break
            op = ops[int(rng.choice(len(ops), p=p))]
            donor = donors[int(rng.integers(len(donors)))] if op.needs_donor and donors else None
            if op.needs_donor and donor is None:
                continue
            text = op.fn(parent.text, rng, donor.text if donor else None)
            if not text or not text.strip() or len(text.split()) > self.max_words:
                continue
            kid = Candidate.child(text.strip(), parent, op.name, op.family, round, second_parent=donor)
            if kid.key not in taken and kid.key not in keys:
                keys.add(kid.key)
                kids.append(kid)
        return kids


def _op_weight(family_weight: float, direction: int) -> float:
    if direction >= 0:
        return family_weight
    # removing a kind of instruction the prior disfavours is favoured in proportion, capped at 10x
    return min(1.0 / family_weight, 10.0) if family_weight > 0 else 10.0


META_SYSTEM = (
    "You improve instructions (prompts) that are given to an AI model together with a task. "
    "You reply with rewritten prompts only: one per line, numbered, no commentary."
)


def meta_prompt(parent: Candidate, n: int, feedback: Feedback | None) -> str:
    """The user message asking for ``n`` rewrites of ``parent``, with the model's feedback."""
    lines = [f"Here is the current prompt:\n<prompt>{parent.text}</prompt>"]
    if feedback is not None:
        if feedback.summary:
            lines.append(f"An offline evaluation says: {feedback.summary}.")
        if feedback.strong:
            lines.append("It works best on tasks like:\n" + "\n".join(f"- {q}" for q in feedback.strong))
        if feedback.weak:
            lines.append("It works worst on tasks like:\n" + "\n".join(f"- {q}" for q in feedback.weak))
        if feedback.hints:
            lines.append("Known effects of kinds of edits on this task: " + "; ".join(feedback.hints) + ".")
    lines.append(f"Write {n} different improved versions of the prompt that keep what works and fix what "
                 f"does not. Each version is one paragraph of at most 60 words. Output exactly {n} "
                 "lines, numbered 1. to " + f"{n}.")
    return "\n\n".join(lines)


_NUMBERED = re.compile(r"^\s*(?:(?:\d+[.)]|[-*\u2022])\s*)+")


def parse_rewrites(text: str, parent_text: str, max_words: int, exclude: Sequence[str] = ()) -> list[str]:
    """Prompts from an LLM reply: its numbered or bulleted lines (every line if none is numbered),
    stripped of numbering, quotes and tags; echoes of the parent or of ``exclude`` are dropped."""
    lines = [ln for ln in (text or "").splitlines() if ln.strip()]
    numbered = [ln for ln in lines if _NUMBERED.match(ln)]
    drop = {t.strip().lower() for t in (parent_text, *exclude)}
    out = []
    for line in numbered or lines:
        s = _NUMBERED.sub("", line).strip().strip('"').strip("'").strip()
        s = re.sub(r"</?prompt>", "", s).strip()
        if 2 <= len(s.split()) <= max_words and s.lower() not in drop:
            out.append(s)
    return out


class LLMProposer:
    """Children written by an LLM from a meta-prompt that shows the parent and the model's feedback.

    Parameters
    ----------
    backend : cpo_engine.generation.types.Backend
        Any backend (vLLM, OpenAI-compatible HTTP incl. a local llama.cpp server, ...).
    sampling : cpo_engine.generation.types.SamplingConfig, optional
        Default: temperature 0.8, top_p 0.95, 384 tokens, seed from ``seed``.
    per_call : int
        Rewrites asked for in one request; more requests (different sample seeds) fill n_children.
    seed : int
        Base seed; requests are keyed (round, parent, call) so a rerun asks for the same samples.
    max_words : int
        Rewrites longer than this are dropped.
    """

    operator = "llm_rewrite"
    wants_feedback = True

    def __init__(self, backend: Any, sampling: Any = None, per_call: int = 4, seed: int = 0,
                 max_words: int = 120) -> None:
        self.backend, self.sampling, self.per_call = backend, sampling, per_call
        self.seed, self.max_words = seed, max_words

    def _sampling(self) -> Any:
        from cpo_engine.generation.types import SamplingConfig

        return self.sampling or SamplingConfig(temperature=0.8, top_p=0.95, max_tokens=384, seed=self.seed)

    def requests(self, parents: Sequence[Candidate], n_children: int, round: int,
                 feedback: dict[str, Feedback] | None) -> list[Any]:
        """One chat request per (parent, call); ``ceil(n_children / per_call)`` calls per parent."""
        from cpo_engine.generation.types import GenerationRequest, RowKey

        calls = max(1, math.ceil(n_children / self.per_call))
        reqs = []
        for parent in parents:
            user = meta_prompt(parent, self.per_call, (feedback or {}).get(parent.id))
            msgs = ({"role": "system", "content": META_SYSTEM}, {"role": "user", "content": user})
            for j in range(calls):
                key = RowKey(run_id="search", query_id=f"round{round}", prompt_id=parent.id, sample=j)
                reqs.append(GenerationRequest(key=key, messages=msgs, sampling=self._sampling()))
        return reqs

    def propose(self, parents: Sequence[Candidate], n_children: int, *, round: int,
                seen: set[str] | None = None, feedback: dict[str, Feedback] | None = None) -> list[Candidate]:
        """Rewrites of each parent; failed requests are skipped (their error is in the response)."""
        reqs = self.requests(parents, n_children, round, feedback)
        by_id = {p.id: p for p in parents}
        kids: dict[str, list[Candidate]] = {p.id: [] for p in parents}
        for resp in self.backend.generate(reqs):
            parent = by_id[resp.key.prompt_id]
            fb = (feedback or {}).get(parent.id)
            shown = [*fb.strong, *fb.weak] if fb else []
            for text in parse_rewrites(resp.text or "", parent.text, self.max_words, exclude=shown):
                kids[parent.id].append(Candidate.child(text, parent, self.operator, None, round))
        taken = set(seen or ()) | {p.key for p in parents}
        out: list[Candidate] = []
        for pid, cands in kids.items():
            fresh = unique(cands, taken)[:n_children]
            taken.update(c.key for c in fresh)
            out.extend(fresh)
        return out


__all__ = ["EditPrior", "EditProposer", "Feedback", "LLMProposer", "Proposer", "meta_prompt", "parse_rewrites",
           "PRIOR_FORMAT"]
