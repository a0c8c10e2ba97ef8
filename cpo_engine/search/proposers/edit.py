"""The edit proposer: children by edit operators (:mod:`cpo_engine.search.operators`), no LLM.

Operators are sampled with weights from an edit prior (arXiv 2605.26655) for the task at hand.
Deterministic under a seed: the children of a parent depend only on (seed, round, parent id,
donor pool), not on the order of the parents.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from cpo_engine.exceptions import ConfigError
from cpo_engine.search.candidates import Candidate
from cpo_engine.search.operators import Operator, get_operators
from cpo_engine.search.proposers import register_proposer
from cpo_engine.search.proposers.base import Feedback

if TYPE_CHECKING:  # the edit prior (pandas) is imported when a proposer is built, not when it is registered
    from cpo_engine.edits.prior import EditPrior


def _stable_int(text: str) -> int:
    # Python's hash() is salted per process: a seed from it would not reproduce across runs.
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
        from cpo_engine.edits.prior import EditPrior

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


def load_prior(edit_prior: str | None) -> "EditPrior | None":
    """The edit prior a :class:`~cpo_engine.search.config.ProposerConfig` names.

    ``"auto"``: the packaged prior (:func:`cpo_engine.edits.prior.default_prior_path`) when it is
    installed, else uniform weights; None: uniform weights; anything else: a path, read and
    validated (a missing or bad file is a :class:`~cpo_engine.exceptions.DataError` naming it).
    """
    from cpo_engine.edits.prior import EditPrior, default_prior_path

    if edit_prior is None:
        return None
    if edit_prior == "auto":
        path = default_prior_path("math")
        return EditPrior.load(path) if path.is_file() else None
    return EditPrior.load(Path(edit_prior))


def _check_prior(cfg: Any) -> None:
    if cfg.edit_prior not in (None, "auto"):
        load_prior(cfg.edit_prior)  # reads and validates the file: a DataError names it and the fix


@register_proposer("edit", help="edit operators weighted by the edit prior, no LLM", preflight=_check_prior)
def make_edit_proposer(cfg: Any, *, task: str | None = None, seed: int = 0) -> EditProposer:
    """The registered ``edit``: an :class:`EditProposer` with ``cfg.edit_prior`` for ``cfg.task`` (else ``task``)."""
    return EditProposer(prior=load_prior(cfg.edit_prior), task=cfg.task if cfg.task is not None else task, seed=seed)


__all__ = ["EditProposer", "load_prior", "make_edit_proposer"]
