"""Worked examples: children that add few-shot demonstrations drawn from logged successes, no LLM.

``examples``: each child is its parent plus ``k`` demonstrations (a ``Q: <query>`` line and an ``A: <answer>``
line each: generation.templating.demo_block; ``template.demos`` renders them in the prompt or as earlier chat
turns), put before the parent's answer trigger (a last sentence ending in ``:``), as DSPy's BootstrapFewShot
picks demonstrations from traces that passed the metric. A demonstration is a *training* row at the
top of the score range (``min_score``: default the highest score of the training rows, e.g. 1 for
0/1 correctness) with an answer: the row's ``response_text`` where the table has one (the model's
own successful answer, shortest first), else its ``gold_answer`` (``answer_column`` names another
column). The workflows pass only the training queries' rows (``cpo run``: its training split;
``cpo optimize``: the table minus the queries its verification will measure), so a demonstration
never holds a held-out query's answer. A child of a child swaps its demonstrations (the proposer
remembers the text they were added to) rather than piling them up. ``choose``: ``random`` (a
uniform draw of ``k``) or ``diverse`` (greedy farthest-point on the questions' word sets, Jaccard
distance, from a random start: cheap, no embedding). Deterministic under the seed: the children of
a parent depend only on (seed, round, parent id, the proposer's earlier children).

``edit_examples``: the edit operators (:mod:`.edit`) plus "add worked examples" as one more
operator. The edit prior's weight of the ``worked_examples`` family is that operator's weight next
to the operators' own (as :meth:`EditProposer.operator_weights` weighs them): with the uniform prior
and the 13 edit operators, about 1 child in 14 adds examples; a weight of 2 doubles that; 0: never.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from cpo_engine.exceptions import ConfigError, DataError
from cpo_engine.search.candidates import Candidate
from cpo_engine.search.operators import sentences
from cpo_engine.search.proposers import register_proposer
from cpo_engine.search.proposers.base import Feedback
from cpo_engine.search.proposers.edit import EditProposer, _op_weight, _stable_int, load_prior

FAMILY = "worked_examples"
CHOICES = ("random", "diverse")
OPTIONS: dict[str, Any] = {"k": 2, "choose": "random", "min_score": None, "answer_column": "auto",
                           "max_demo_words": 80, "max_words": 400}
_WORDS = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class Demo:
    """One demonstration: a training query and a successful answer to it."""

    query_id: str
    question: str
    answer: str

    @property
    def text(self) -> str:
        from cpo_engine.generation.templating import demo_block

        return demo_block(self.question, self.answer)


def _clean(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return " ".join(str(value).split())


def _answer_column(data: Any, answer_column: str, source: str) -> str:
    if answer_column != "auto":
        if answer_column not in data.column_names:
            raise DataError(f"no column '{answer_column}' (proposer.options.answer_column)", source=source,
                            column=answer_column, fix=f"name one of: {', '.join(data.column_names)}")
        return answer_column
    for col in ("response_text", "gold_answer"):
        if col in data.column_names and data.column(col).null_count < len(data):
            return col
    raise DataError("worked examples need an answer per query: the table has no response_text or gold_answer "
                    "column with values", source=source, column="response_text",
                    fix="add the model's answers (response_text) or the gold answers (gold_answer), or name the "
                        "column with proposer.options.answer_column")


def success_demos(data: Any, *, min_score: float | None = None, answer_column: str = "auto",
                  max_demo_words: int = 80, source: str = "the training rows") -> list[Demo]:
    """One demonstration per training query with a successful row: its shortest answer among its rows
    scored at least ``min_score`` (default: the rows' highest score), in query-id order.

    ``data`` holds the training rows only (a pyarrow table with query_id, query_text, score and an
    answer column); a demonstration longer than ``max_demo_words`` words is left out.
    """
    need = [c for c in ("query_id", "query_text", "score") if c not in data.column_names]
    if need:
        raise DataError(f"worked examples need the column(s) {', '.join(need)}", source=source, column=need[0],
                        fix="pass the training triplets (query_id, query_text, score, an answer column)")
    col = _answer_column(data, answer_column, source)
    score = np.asarray(data.column("score").to_numpy(zero_copy_only=False), dtype=float)
    ok = np.isfinite(score)
    if not ok.any():
        raise DataError("no finite score to tell a success", source=source, column="score",
                        fix="pass rows with graded answers")
    top = float(score[ok].max()) if min_score is None else float(min_score)
    best: dict[str, Demo] = {}
    rows = zip(data.column("query_id").to_pylist(), data.column("query_text").to_pylist(), score,
               data.column(col).to_pylist())
    for qid, question, s, answer in rows:
        key, q, a = str(qid), _clean(question), _clean(answer)
        if not (s >= top) or not q or not a:
            continue
        demo = Demo(key, q, a)
        if len(demo.text.split()) <= max_demo_words and (key not in best or len(a) < len(best[key].answer)):
            best[key] = demo
    return [best[q] for q in sorted(best)]


class ExamplesProposer:
    """Children that add ``k`` worked examples (see the module docstring); no LLM.

    Parameters
    ----------
    demos : list of Demo
        The pool (training successes only, :func:`success_demos`).
    k : int
        Demonstrations per child.
    choose : {"random", "diverse"}
        How a child's demonstrations are drawn.
    seed : int
        Base seed; the same seed, round and parents give the same children.
    max_words : int
        Children longer than this are dropped.
    max_tries : int
        Draws per requested child before a parent is declared exhausted.
    """

    operator = "add_examples"
    family = FAMILY

    def __init__(self, demos: Sequence[Demo], k: int = 2, choose: str = "random", seed: int = 0,
                 max_words: int = 400, max_tries: int = 8) -> None:
        check_options(k=k, choose=choose, max_words=max_words)
        if len(demos) < k:
            raise DataError(f"{len(demos)} successful training queries with an answer, fewer than the {k} "
                            "demonstrations a child needs", source="the training rows", column="score",
                            fix="lower proposer.options.k or min_score, or raise max_demo_words")
        self.demos, self.k, self.choose, self.seed = list(demos), k, choose, seed
        self.max_words, self.max_tries = max_words, max_tries
        self._words = [set(_WORDS.findall(d.question.lower())) for d in self.demos]
        self._base: dict[str, str] = {}  # a child's key -> the text its demonstrations were added to

    def pick(self, rng: np.random.Generator) -> tuple[int, ...]:
        """Indices of one draw of ``k`` demonstrations (sorted: the same set is one child)."""
        n = len(self.demos)
        if self.choose == "random":
            return tuple(sorted(int(i) for i in rng.choice(n, size=self.k, replace=False)))
        pool = [int(i) for i in rng.choice(n, size=min(n, 64), replace=False)]
        chosen = [pool.pop(0)]
        while len(chosen) < self.k:
            far = max(range(len(pool)), key=lambda j: min(_jaccard(self._words[pool[j]], self._words[c])
                                                          for c in chosen))
            chosen.append(pool.pop(far))
        return tuple(sorted(chosen))

    def compose(self, base: str, picked: Sequence[int]) -> str:
        """``base`` with the demonstrations ``picked`` before its answer trigger, each on lines of its own (``Q: `` /
        ``A: ``: the template renders them inline or as chat turns, generation.templating.split_demos)."""
        sents = sentences(base)
        trigger = [sents.pop()] if sents and sents[-1].rstrip().endswith(":") else []
        head = " ".join(s.strip() for s in sents if s.strip())
        return "\n".join(x for x in [head, *(self.demos[i].text for i in picked), " ".join(t.strip() for t in trigger)] if x)

    def propose(self, parents: Sequence[Candidate], n_children: int, *, round: int,
                seen: set[str] | None = None, feedback: dict[str, Feedback] | None = None) -> list[Candidate]:
        """Up to ``n_children`` new, distinct children per parent, each with its own draw of demonstrations."""
        taken = set(seen or ()) | {c.key for c in parents}
        out: list[Candidate] = []
        for parent in parents:
            base = self._base.get(parent.key, parent.text)
            rng = np.random.default_rng([self.seed, round, _stable_int(parent.id)])
            kids = 0
            for _ in range(n_children * self.max_tries):
                if kids >= n_children:
                    break
                text = self.compose(base, self.pick(rng))
                kid = Candidate.child(text, parent, self.operator, self.family, round)
                if len(text.split()) > self.max_words or kid.key in taken:
                    continue
                taken.add(kid.key)
                self._base[kid.key] = base
                out.append(kid)
                kids += 1
        return out


def _jaccard(a: set[str], b: set[str]) -> float:
    return 1.0 - len(a & b) / len(a | b) if a | b else 0.0


class EditExamplesProposer:
    """The edit operators plus "add worked examples", weighted by the edit prior (module docstring)."""

    def __init__(self, edit: EditProposer, examples: ExamplesProposer) -> None:
        self.edit, self.examples = edit, examples

    def examples_share(self) -> float:
        """The probability that a child adds worked examples: the family's prior weight over the total."""
        from cpo_engine.edits.prior import EditPrior

        fam = (self.edit.prior or EditPrior()).weights(self.edit.task)
        ops = sum(_op_weight(fam[op.family], op.direction) for op in self.edit.operator_weights()[0])
        return fam[FAMILY] / (ops + fam[FAMILY]) if ops + fam[FAMILY] > 0 else 0.0

    def propose(self, parents: Sequence[Candidate], n_children: int, *, round: int,
                seen: set[str] | None = None, feedback: dict[str, Feedback] | None = None) -> list[Candidate]:
        """Per parent, a binomial draw of its ``n_children`` slots goes to worked examples, the rest to edits."""
        share = self.examples_share()
        edits = self.edit.propose(parents, n_children, round=round, seen=seen)
        shots = self.examples.propose(parents, n_children, round=round, seen=seen) if share > 0 else []
        taken = set(seen or ()) | {c.key for c in parents}
        out: list[Candidate] = []
        for parent in parents:
            rng = np.random.default_rng([self.examples.seed, round, _stable_int(parent.id), 1])
            n_shots = int(rng.binomial(n_children, share))
            mine = [c for c in shots if c.parent == parent.id][:n_shots]
            mine += [c for c in edits if c.parent == parent.id][:n_children - len(mine)]
            for c in mine:
                if c.key not in taken:
                    taken.add(c.key)
                    out.append(c)
        return out


def check_options(*, k: int = 2, choose: str = "random", min_score: Any = None, answer_column: str = "auto",
                  max_demo_words: int = 80, max_words: int = 400) -> None:
    """ConfigError naming the option and the fix for a bad value of ``proposer.options``."""
    if k < 1:
        raise ConfigError(f"proposer.options.k must be >= 1 (demonstrations per child), got {k}")
    if choose not in CHOICES:
        raise ConfigError(f"proposer.options.choose must be one of {', '.join(CHOICES)}, got {choose!r}")
    if min_score is not None and (isinstance(min_score, bool) or not isinstance(min_score, (int, float))
                                  or not math.isfinite(min_score)):
        raise ConfigError(f"proposer.options.min_score must be a finite number (a score that counts as a success) "
                          f"or unset (the highest score), got {min_score!r}")
    if not answer_column:
        raise ConfigError("proposer.options.answer_column must name a column or be 'auto'")
    if max_demo_words < 2 or max_words < 2:
        raise ConfigError(f"proposer.options.max_demo_words and max_words must be >= 2, got {max_demo_words} "
                          f"and {max_words}")


def _preflight(cfg: Any) -> None:
    from cpo_engine.search.proposers import proposer_spec

    check_options(**proposer_spec(cfg.kind).resolve_options(cfg.options))
    if cfg.kind == "edit_examples" and cfg.edit_prior not in (None, "auto"):
        load_prior(cfg.edit_prior)


def _examples(cfg: Any, seed: int, data: Any, options: dict[str, Any]) -> ExamplesProposer:
    check_options(**options)
    if data is None:
        raise ConfigError(f"proposer '{cfg.kind}' needs the training rows to draw worked examples from: "
                          "`cpo run` (its training split) and `cpo optimize` pass them, `cpo nightly` does not yet; "
                          "from Python, call make_proposer(cfg, data=<the training queries' rows>)")
    demos = success_demos(data, min_score=options["min_score"], answer_column=options["answer_column"],
                          max_demo_words=options["max_demo_words"])
    return ExamplesProposer(demos, k=options["k"], choose=options["choose"], seed=seed,
                            max_words=options["max_words"])


@register_proposer("examples", help="adds k worked examples (Q: A:) drawn from logged training successes, no LLM",
                   options=OPTIONS, needs_data=True, preflight=_preflight)
def make_examples_proposer(cfg: Any, *, task: str | None = None, seed: int = 0, data: Any = None,
                           **options: Any) -> ExamplesProposer:
    """The registered ``examples``: an :class:`ExamplesProposer` on the successes among ``data``."""
    return _examples(cfg, seed, data, options)


@register_proposer("edit_examples", help="edit operators plus adding worked examples, weighted by the edit prior",
                   options=OPTIONS, needs_data=True, preflight=_preflight)
def make_edit_examples_proposer(cfg: Any, *, task: str | None = None, seed: int = 0, data: Any = None,
                                **options: Any) -> EditExamplesProposer:
    """The registered ``edit_examples``: the ``edit`` proposer's operators plus worked examples."""
    edit = EditProposer(prior=load_prior(cfg.edit_prior), task=cfg.task if cfg.task is not None else task,
                        seed=seed)
    return EditExamplesProposer(edit, _examples(cfg, seed, data, options))


__all__ = ["Demo", "EditExamplesProposer", "ExamplesProposer", "check_options", "make_edit_examples_proposer",
           "make_examples_proposer", "success_demos"]
