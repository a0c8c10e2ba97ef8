"""Rule/lexicon detectors for the edit families of :mod:`cpo_engine.taxonomy`.

An edit's family vector is *signed*: ``+1`` when the edit inserts more cues of a family than it
deletes, ``-1`` when it deletes more than it inserts, ``0`` otherwise. Cues are counted on the
inserted and deleted word spans of the diff (see :func:`cpo_engine.edits.extract.diff_spans`), so
rewording inside an unchanged instruction ("think step by step" -> "think carefully step by step")
does not count as adding the family. Two families also have a size rule: an edit that adds many
words is ``complexity`` ("elaborate detail"), one that removes a large share of the prompt is
``conciseness`` (the size rule of ``complexity`` does not apply to an edit that adds worked
examples: their length is the demonstrations'). ``recombination`` cannot be seen in the text of two
prompts; it comes from the trace (an ``operator`` column or a second parent), see :mod:`cpo_engine.edits.pairs`.

The lexicons are written from the family definitions (arXiv 2605.26655's grouping), not from any
data set: they are meant to be general, and are deliberately short and readable so a user can audit
or extend them through :class:`DetectorConfig`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from cpo_engine.taxonomy import EDIT_FAMILIES

_W = r"[a-z'’-]+"

#: Regular expressions (case-insensitive, matched on lower-cased text) per family.
LEXICONS: dict[str, tuple[str, ...]] = {
    "step_by_step": (
        r"\bstep[- ]by[- ]step\b",
        r"\bsteps?\b",
        r"\b(one|piece|layer|part|line|stage|bit|point|item|number) by \1\b",
        r"\bone (step|thing|piece|part) at a time\b",
        r"\bsequential(ly)?\b",
        r"\bwalk (me |us |you )?through\b",
        r"\bshow (your|the|all) (work|working|reasoning|calculations?)\b",
        r"\bchain[- ]of[- ]thought\b",
        r"\bthink (it |this )?through\b",
        r"\breason (it |this )?(out|through)\b",
    ),
    "meta_cognitive": (
        r"\breflect(ing|ion)?\b",
        r"\bconfiden(t|ce)\b",
        r"\b(unsure|uncertain(ty)?)\b",
        r"\brealis(e|es|ed|ing)\b|\brealiz(e|es|ed|ing)\b",
        r"\bmistakes?\b",
        r"\bwrong\b",
        r"\bassumptions?\b",
        r"\bself[- ]?(critique|evaluat\w*|assess\w*|reflect\w*)\b",
        r"\bmeta[- ]?cogniti\w*\b",
        r"\b(your|my|our|own) (thinking|thought process|reasoning process|understanding)\b",
        r"\b(fully |deeply )?understand\b",
        r"\bthink about (how|what|why|your|the approach)\b",
        r"\bare you sure\b",
        r"\bintrospect\w*\b",
    ),
    "meta_instruction": (
        r"\binstructions?\b",
        r"\brules?\b",
        r"\bguidelines?\b",
        r"\bfollow (these|the|all|my|this)\b",
        r"\bignore\b",
        r"\bprioriti[sz]e\b|\bpriority\b",
        r"\b(this|the) prompt\b",
        r"\byour (task|goal|job|objective|role) is\b",
        r"\b(important|note|remember)\s*:",
        r"\b(always|never|strictly)\b",
        r"\bdo not (deviate|mention|include|add|repeat)\b",
        r"\bread (the|this) (question|problem|task) carefully\b",
    ),
    "complexity": (
        r"\b(requirements?|constraints?|conditions?)\b",
        r"\b(must|shall)\b",
        r"\bin (great |full |more )?detail\b|\bdetailed\b",
        r"\b(comprehensive(ly)?|thorough(ly)?|exhaustive(ly)?|elaborate(ly)?)\b",
        r"\b(all|every) (possible|relevant|aspect|detail|angle|case)\w*\b",
        r"\b(various|multiple|several|different) (perspectives|approaches|methods|ways|aspects|angles|viewpoints)\b",
        r"\b(sophisticated|intricate|nuanced|rigorous(ly)?)\b",
        r"\b(take into account|account for|taking into consideration)\b",
        r"\b(additionally|furthermore|moreover|in addition)\b",
        r"\b(at least|no more than|at most|exactly) \d+\b",
        r"\b(explicitly|throughout)\b",
        r"\bevery (quantity|number|unit|variable|value|term|condition|constraint|assumption|fact|detail)\b",
        r"\b(keep )?track (of )?(the|every|all|each)\b",
    ),
    "persona": (
        r"\byou are (an?|the) " + _W,
        r"\bact(ing)? (as|like) (an?|the)\b",
        r"\bas an? (" + _W + " )?(expert|specialist|teacher|tutor|professor|scientist|mathematician"
        r"|engineer|analyst|detective|scholar|consultant)\b",
        r"\b(experts?|specialists?|scholars?|philosophers?|professors?|teachers?|tutors?"
        r"|mathematicians?|scientists?|detectives?|architects?|engineers?|analysts?|consultants?"
        r"|geniuses|genius|assistants?)\b",
        r"\b(panel|committee|team|council|round table|group) of\b",
        r"\b(pretend|role[- ]?play|persona)\b",
        r"\bimagine (you are|you're|yourself)\b",
        r"\blike an? " + _W + r" would\b",
    ),
    "decomposition": (
        r"\bdecompos\w*\b",
        r"\bsub[- ]?(questions?|problems?|tasks?|goals?|steps?|parts?)\b",
        r"\bbreak(ing)? (it|this|that|them|the \w+)? ?(down|up|apart|into)\b",
        r"\bbreak down\b",
        r"\b(split|divide|separate) (it|this|the \w+) into\b",
        r"\bsmaller (parts|pieces|problems|questions|tasks|steps|chunks)\b",
        r"\b(components?|sub-?components?)\b",
        r"\bfirst,? .{0,80}\bthen\b",
    ),
    "answer_format": (
        r"\bthe answer is\b",
        r"(^|[.!?\n]\s*)(final )?answer\s*:",
        r"\bfinal answer\b",
        r"\bformat(ted)?\b",
        r"\b(json|yaml|markdown|latex|bullet points?|a table|a list)\b",
        r"\b(only|just) (the|a|one) (final )?(number|answer|value|integer|word|letter)\b",
        r"\b(respond|reply|output|answer) (with|in|as|using)\b",
        r"\bbox(ed)?\b|\\boxed",
        r"####",
        r"\b(end|finish|conclude) (your (answer|response) )?with\b",
        r"\b(as|in) (a|one) (single )?(number|integer|sentence|word|line)\b",
    ),
    "verification": (
        r"\bverif(y|ies|ied|ication)\b",
        r"\b(double|re|cross)[- ]?check\w*\b|\bcheck\w*\b",
        r"\bmake sure\b",
        r"\bensure (that )?(the|your|our) (answer|result|solution|calculation)\w*\b",
        r"\bconfirm\w*\b",
        r"\bvalidat\w*\b",
        r"\bto be (sure|certain)\b",
        r"\b(is|are|be) (correct|right|accurate)\b",
        r"\b(right|correct) (answer|result|solution)\b",
        r"\bre-?examin\w*\b|\bre-?evaluat\w*\b",
        r"\bsanity\b",
        r"\bplug (it|the \w+) back\b",
    ),
    "conciseness": (
        r"\bconcise(ly)?\b",
        r"\bbrief(ly)?\b",
        r"\bshort(ly)?\b",
        r"\bsuccinct(ly)?\b",
        r"\bsimpl(e|y|ify|ified)\b",
        r"\bin one (sentence|word|line)\b",
        r"\bno (explanation|extra|additional)\b",
        r"\bwithout (explanation|elaborat\w*|extra)\b",
        r"\b(keep|be) (it )?(short|brief|concise)\b",
    ),
    "worked_examples": (
        r"(^|[\s.!?:])q\s*:",  # a demonstration's question marker ("Q: ... A: ...")
        r"\b(worked|solved) examples?\b",
        r"\bhere (is|are) (an? |some |\w+ )?(worked |solved )?examples?\b",
        r"\bexamples? (of|with) (solutions?|answers?)\b",
        r"\bfew\s*-?\s*shot\b|\bdemonstrations?\b",
    ),
}


@dataclass(frozen=True)
class DetectorConfig:
    """How edit families are detected from a parent -> child diff.

    Attributes
    ----------
    lexicons : dict
        Family name -> regular expressions; merged over :data:`LEXICONS` (a key here replaces the
        built-in list for that family). Family names must come from ``cpo_engine.taxonomy``.
    complexity_min_added_words : int
        An edit whose child is at least this many words longer than its parent counts as adding
        ``complexity`` ("elaborate detail") even without a lexicon cue.
    complexity_min_growth : float
        ... and the child must also be at least this many times the parent's length.
    conciseness_min_removed_words : int
        An edit that removes at least this many words (net) counts as ``conciseness`` ...
    conciseness_max_ratio : float
        ... provided the child keeps at most this share of the parent's words.
    """

    lexicons: dict[str, tuple[str, ...]] = field(default_factory=dict)
    complexity_min_added_words: int = 25
    complexity_min_growth: float = 1.5
    conciseness_min_removed_words: int = 8
    conciseness_max_ratio: float = 0.6

    def compiled(self) -> dict[str, list[re.Pattern[str]]]:
        """Return the merged lexicons, compiled (raises ``ValueError`` on unknown family names)."""
        unknown = sorted(set(self.lexicons) - set(EDIT_FAMILIES))
        if unknown:
            raise ValueError(
                f"DetectorConfig.lexicons has unknown families {unknown}; use names from "
                f"cpo_engine.taxonomy.EDIT_FAMILIES: {sorted(EDIT_FAMILIES)}"
            )
        merged = {**LEXICONS, **self.lexicons}
        return {fam: [re.compile(p, re.IGNORECASE) for p in pats] for fam, pats in merged.items()}


_DEFAULT = DetectorConfig()
_COMPILED_CACHE: dict[tuple, dict[str, list[re.Pattern[str]]]] = {}


def _patterns(config: DetectorConfig) -> dict[str, list[re.Pattern[str]]]:
    key = tuple(sorted((fam, tuple(pats)) for fam, pats in config.lexicons.items()))
    if key not in _COMPILED_CACHE:
        _COMPILED_CACHE[key] = config.compiled()
    return _COMPILED_CACHE[key]


def family_counts(text: str, config: DetectorConfig = _DEFAULT) -> dict[str, int]:
    """Count the cues of every lexicon family in ``text`` (non-overlapping matches per pattern)."""
    low = text.lower()
    return {fam: sum(len(p.findall(low)) for p in pats) for fam, pats in _patterns(config).items()}


def family_presence(text: str, config: DetectorConfig = _DEFAULT) -> dict[str, int]:
    """1 for every family with at least one cue in ``text``, else 0 (all taxonomy families)."""
    counts = family_counts(text, config)
    return {fam: int(counts.get(fam, 0) > 0) for fam in EDIT_FAMILIES}


def _span_counts(spans: list[str], config: DetectorConfig) -> dict[str, int]:
    total = dict.fromkeys(EDIT_FAMILIES, 0)
    for span in spans:
        for fam, n in family_counts(span, config).items():
            total[fam] += n
    return total


def edit_families(
    inserted: list[str],
    deleted: list[str],
    n_parent_words: int,
    n_child_words: int,
    config: DetectorConfig = _DEFAULT,
) -> dict[str, int]:
    """Signed family vector of one edit from its inserted and deleted spans.

    Parameters
    ----------
    inserted, deleted : list of str
        Word spans the edit inserts into / deletes from the parent (from ``diff_spans``).
    n_parent_words, n_child_words : int
        Word counts of the two prompts, for the size rules.
    config : DetectorConfig

    Returns
    -------
    dict
        ``{family: -1 | 0 | +1}`` for every family in ``EDIT_FAMILIES`` (``recombination`` is 0).
    """
    ins, dele = _span_counts(inserted, config), _span_counts(deleted, config)
    raw = {fam: ins[fam] - dele[fam] for fam in EDIT_FAMILIES}
    grow = n_child_words - n_parent_words
    adds_examples = ins["worked_examples"] > dele["worked_examples"]  # demonstrations are not "elaborate detail"
    if not adds_examples and grow >= config.complexity_min_added_words and n_child_words >= (
        config.complexity_min_growth * max(n_parent_words, 1)
    ):
        raw["complexity"] += 1
    if -grow >= config.conciseness_min_removed_words and n_child_words <= (
        config.conciseness_max_ratio * n_parent_words
    ):
        raw["conciseness"] += 1
    return {fam: int((v > 0) - (v < 0)) for fam, v in raw.items()}


__all__ = ["LEXICONS", "DetectorConfig", "edit_families", "family_counts", "family_presence"]
