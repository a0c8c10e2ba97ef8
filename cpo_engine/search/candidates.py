"""Candidate prompts with lineage. When two texts are duplicates (:func:`dedup_key`) and a text's id
(:func:`candidate_id`) are defined in :mod:`cpo_engine.taxonomy` and re-exported here."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable

# The text-identity helpers live below both search and edits (edits reproduces search ids).
from cpo_engine.taxonomy import candidate_id, dedup_key


@dataclass(frozen=True)
class Candidate:
    """One prompt in the search, with where it came from.

    Attributes
    ----------
    text : str
        The prompt text.
    id : str
        :func:`candidate_id` of ``text`` (the id of a seed prompt may be the user's prompt id).
    parent : str or None
        Id of the prompt it was derived from; None for seeds.
    operator : str or None
        The operator (edit proposer) or ``"llm_rewrite"`` that produced it; None for seeds.
    family : str or None
        The edit family of the operator (``cpo_engine.taxonomy.EDIT_FAMILIES``), if any.
    round : int
        Search round that proposed it (0 for seeds).
    second_parent : str or None
        The other parent of a recombination.
    """

    text: str
    id: str
    parent: str | None = None
    operator: str | None = None
    family: str | None = None
    round: int = 0
    second_parent: str | None = None

    @classmethod
    def seed(cls, text: str, id: str | None = None) -> "Candidate":
        """A seed candidate (no lineage), optionally keeping the user's prompt id."""
        return cls(text=text, id=id or candidate_id(text))

    @classmethod
    def child(cls, text: str, parent: "Candidate", operator: str, family: str | None, round: int,
              second_parent: "Candidate | None" = None) -> "Candidate":
        return cls(text=text, id=candidate_id(text), parent=parent.id, operator=operator, family=family,
                   round=round, second_parent=second_parent.id if second_parent else None)

    @property
    def key(self) -> str:
        return dedup_key(self.text)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def unique(candidates: Iterable[Candidate], seen: set[str] | None = None) -> list[Candidate]:
    """First occurrence of each dedup key, skipping keys in ``seen`` (which is not modified)."""
    taken = set(seen or ())
    out = []
    for c in candidates:
        if c.key not in taken:
            taken.add(c.key)
            out.append(c)
    return out


__all__ = ["Candidate", "candidate_id", "dedup_key", "unique"]
