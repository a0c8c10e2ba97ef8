"""Extract the edit between two prompts and represent it three ways.

1. **Edit families**: a signed vector over ``cpo_engine.taxonomy.EDIT_FAMILIES`` from rule/lexicon
   detectors on the inserted and deleted text (:mod:`cpo_engine.edits.families`).
2. **Surface features**: child-minus-parent change in word count, sentence count, imperative
   sentences and Flesch reading ease.
3. **Text-diff motifs**: the word n-grams the edit inserts (``"+ step by step"``) and deletes
   (``"- the answer is"``).

The diff is a word-level ``difflib`` alignment: robust to punctuation, no model needed.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cpo_engine.edits.families import DetectorConfig, edit_families

if TYPE_CHECKING:
    import pandas as pd

_TOKEN = re.compile(r"[A-Za-z0-9]+(?:['’][A-Za-z]+)?|[^\sA-Za-z0-9]")
_WORD = re.compile(r"[A-Za-z0-9]+(?:['’][A-Za-z]+)?")
_SENT_END = re.compile(r"[.!?]+(?=\s|$)|\n+|:\s*$")
_VOWELS = re.compile(r"[aeiouy]+")

#: Base verbs that open imperative sentences in instructions ("Solve ...", "Let's ...").
IMPERATIVE_VERBS: frozenset[str] = frozenset(
    "answer analyze analyse apply approach assume avoid begin break build calculate check choose "
    "compute consider count decompose define describe determine divide do double draw ensure "
    "envision estimate evaluate explain express find first focus follow give identify ignore "
    "imagine include keep let let's list look make map note outline plan pretend provide put read "
    "recall reconsider reflect remember respond restate return review rewrite say show simplify "
    "solve split start state substitute summarize summarise take tell think try use verify work "
    "write".split()
)

SURFACE_FEATURES: tuple[str, ...] = (
    "d_words",
    "d_sentences",
    "d_imperatives",
    "d_readability",
)


def tokenize(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens."""
    return [t.lower().replace("’", "'") for t in _TOKEN.findall(text)]


def diff_spans(parent: str, child: str) -> tuple[list[str], list[str]]:
    """Inserted and deleted text spans of the word-level diff ``parent -> child``.

    Returns
    -------
    (inserted, deleted) : tuple of list of str
        Each span is the space-joined tokens of one ``insert``/``replace`` (resp. ``delete``/
        ``replace``) opcode, in order.
    """
    a, b = tokenize(parent), tokenize(child)
    inserted: list[str] = []
    deleted: list[str] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op in ("insert", "replace"):
            inserted.append(" ".join(b[j1:j2]))
        if op in ("delete", "replace"):
            deleted.append(" ".join(a[i1:i2]))
    return inserted, deleted


def _syllables(word: str) -> int:
    w = word.lower()
    n = len(_VOWELS.findall(w))
    if w.endswith("e") and not w.endswith(("le", "ee")) and n > 1:
        n -= 1
    return max(n, 1)


def surface_features(text: str) -> dict[str, float]:
    """Word count, sentence count, imperative sentences and Flesch reading ease of ``text``.

    Reading ease is ``206.835 - 1.015 * words/sentence - 84.6 * syllables/word`` with a
    vowel-group syllable count; an empty text gets 0 for everything.
    """
    words = _WORD.findall(text)
    sentences = [s.strip() for s in _SENT_END.split(text) if _WORD.search(s or "")]
    n_words, n_sent = len(words), max(len(sentences), 1 if words else 0)
    imperatives = sum(
        1 for s in sentences if _WORD.findall(s)[0].lower().replace("’", "'") in IMPERATIVE_VERBS
    )
    if not n_words:
        return {"words": 0.0, "sentences": 0.0, "imperatives": 0.0, "readability": 0.0}
    syl = sum(_syllables(w) for w in words)
    ease = 206.835 - 1.015 * n_words / n_sent - 84.6 * syl / n_words
    return {
        "words": float(n_words),
        "sentences": float(n_sent),
        "imperatives": float(imperatives),
        "readability": float(ease),
    }


def diff_motifs(inserted: list[str], deleted: list[str], n_max: int = 3) -> dict[str, int]:
    """Signed n-gram motifs of an edit: ``"+ gram"`` for inserted, ``"- gram"`` for deleted.

    Grams are 1..``n_max`` consecutive word tokens inside one span (punctuation dropped); each
    distinct motif counts once per edit.
    """
    out: dict[str, int] = {}
    for sign, spans in (("+", inserted), ("-", deleted)):
        for span in spans:
            toks = [t for t in span.split() if _WORD.fullmatch(t)]
            for n in range(1, n_max + 1):
                for i in range(len(toks) - n + 1):
                    out[f"{sign} {' '.join(toks[i:i + n])}"] = 1
    return out


@dataclass(frozen=True)
class EditRecord:
    """One edit ``parent -> child`` in its three representations.

    Attributes
    ----------
    families : dict
        Signed family vector ``{family: -1|0|+1}``.
    surface : dict
        Child-minus-parent surface changes, keys :data:`SURFACE_FEATURES`.
    motifs : dict
        ``{"+ gram" | "- gram": 1}`` for the n-grams inserted / deleted.
    inserted, deleted : list of str
        The diff spans the representations were computed from.
    """

    families: dict[str, int]
    surface: dict[str, float]
    motifs: dict[str, int] = field(repr=False)
    inserted: list[str] = field(repr=False)
    deleted: list[str] = field(repr=False)


def extract_edit(
    parent: str, child: str, config: DetectorConfig | None = None, n_max: int = 3
) -> EditRecord:
    """Diff two prompt texts and return the edit's families, surface changes and motifs.

    Examples
    --------
    >>> rec = extract_edit("The answer is:", "Let's think step by step. The answer is:")
    >>> rec.families["step_by_step"], rec.families["answer_format"]
    (1, 0)
    """
    cfg = config or DetectorConfig()
    inserted, deleted = diff_spans(parent, child)
    sp, sc = surface_features(parent), surface_features(child)
    fams = edit_families(inserted, deleted, int(sp["words"]), int(sc["words"]), cfg)
    surface = {f"d_{k}": sc[k] - sp[k] for k in ("words", "sentences", "imperatives", "readability")}
    if not (sp["words"] and sc["words"]):
        surface["d_readability"] = 0.0
    return EditRecord(fams, surface, diff_motifs(inserted, deleted, n_max), inserted, deleted)


def describe_edits(pairs: list[tuple[str, str]], config: DetectorConfig | None = None) -> "pd.DataFrame":
    """One row per ``(parent, child)`` pair: ``fam_<family>`` signed families, surface changes, and
    the inserted / deleted spans (``" | "``-joined): the edit representations without any scores."""
    import pandas as pd

    rows = []
    for parent, child in pairs:
        rec = extract_edit(parent, child, config)
        rows.append({"parent": parent, "child": child, **{f"fam_{k}": v for k, v in rec.families.items()},
                     **rec.surface, "inserted": " | ".join(rec.inserted), "deleted": " | ".join(rec.deleted)})
    return pd.DataFrame(rows)


def log_length_ratio(parent: str, child: str) -> float:
    """``log((1 + words(child)) / (1 + words(parent)))``: a symmetric size change."""
    return math.log((1 + len(_WORD.findall(child))) / (1 + len(_WORD.findall(parent))))


__all__ = [
    "IMPERATIVE_VERBS",
    "SURFACE_FEATURES",
    "EditRecord",
    "describe_edits",
    "diff_motifs",
    "diff_spans",
    "extract_edit",
    "log_length_ratio",
    "surface_features",
]
