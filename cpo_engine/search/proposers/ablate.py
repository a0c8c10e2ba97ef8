"""The ablation proposer (``ablate``): every leave-one-sentence-out variant of a parent.

Where the edit operators drop *one* sentence at random (``shorten`` keeps a prefix, ``simplify`` drops the
longest one), this proposer drops each body sentence in turn, exhaustively and with no randomness: with
the causal model scoring every child for every query, a round of ablation says which sentence of a
prompt earns its place (a child that scores higher than its parent had a sentence that hurt). An answer
trigger (a last sentence ending with ``:``) is never dropped, and a child keeps at least
``min_sentences`` body sentences (``proposer.options.min_sentences``).

This module is the whole proposer: it registers itself, so ``--proposer ablate`` and
``proposer.kind: ablate`` work with no other file changed.
"""

from __future__ import annotations

from typing import Any, Sequence

from cpo_engine.search.candidates import Candidate
from cpo_engine.search.operators import sentences
from cpo_engine.search.proposers import register_proposer
from cpo_engine.search.proposers.base import Feedback


class AblationProposer:
    """Children that each drop one body sentence of their parent (deterministic; no LLM).

    Parameters
    ----------
    min_sentences : int
        Body sentences (the answer trigger not counted) a child keeps at least; a parent with no more
        than this many has no children.

    Examples
    --------
    >>> p = AblationProposer()
    >>> kids = p.propose([Candidate.seed("Be brief. Check your work. Answer:")], 5, round=1)
    >>> [k.text for k in kids]
    ['Check your work. Answer:', 'Be brief. Answer:']
    """

    operator = "drop_sentence"
    family = "conciseness"

    def __init__(self, min_sentences: int = 1) -> None:
        if min_sentences < 1:
            from cpo_engine.exceptions import ConfigError

            raise ConfigError(f"proposer.options.min_sentences must be >= 1, got {min_sentences}")
        self.min_sentences = min_sentences

    def variants(self, text: str) -> list[str]:
        """The texts of ``text`` with one body sentence dropped, in the order of the dropped sentence."""
        sents = sentences(text)
        trigger = [sents.pop()] if sents and sents[-1].rstrip().endswith(":") else []
        if len(sents) <= self.min_sentences:
            return []
        return [" ".join(s.strip() for s in sents[:i] + sents[i + 1:] + trigger) for i in range(len(sents))]

    def propose(self, parents: Sequence[Candidate], n_children: int, *, round: int,
                seen: set[str] | None = None, feedback: dict[str, Feedback] | None = None) -> list[Candidate]:
        """Up to ``n_children`` new, distinct ablations per parent (none whose dedup key is in ``seen``)."""
        taken = set(seen or ()) | {c.key for c in parents}
        out: list[Candidate] = []
        for parent in parents:
            kids = 0
            for text in self.variants(parent.text):
                kid = Candidate.child(text, parent, self.operator, self.family, round)
                if kids >= n_children or kid.key in taken:
                    continue
                taken.add(kid.key)
                out.append(kid)
                kids += 1
        return out


@register_proposer("ablate", help="each leave-one-sentence-out variant of a prompt, no LLM",
                   options={"min_sentences": 1})
def make_ablation_proposer(cfg: Any, *, task: str | None = None, seed: int = 0,
                           min_sentences: int = 1) -> AblationProposer:
    """The registered ``ablate`` (``task`` and ``seed`` do not apply: it is deterministic)."""
    return AblationProposer(min_sentences=min_sentences)


__all__ = ["AblationProposer", "make_ablation_proposer"]
