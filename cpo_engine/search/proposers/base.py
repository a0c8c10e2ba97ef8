"""What every proposer is (:class:`Proposer`) and what the search tells it about a parent (:class:`Feedback`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

from cpo_engine.search.candidates import Candidate


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
        """Up to ``n_children`` new children per parent, none of whose dedup keys is in ``seen``."""
        ...


__all__ = ["Feedback", "Proposer"]
