"""Batched beam search over prompts, scored offline by the causal model (CPO stage 2).

Every round, each surviving beam spawns up to ``children_per_beam`` new prompts (duplicates of
anything seen before are dropped, before anything is embedded); the round's candidates are embedded
in batches through the embedding cache and scored for every query in one batched pass; the archive
of all scored candidates keeps a running per-query top-k (query-dependent mode) and a static ranking
(static mode). The next beams are the best static candidates so far (elitist: a round can never lose
the best so far) plus the candidates that win the most queries, so prompts that are best for a
subgroup of queries keep being refined. A round whose beams run out of distinct children before
``beam_width * children_per_beam`` new candidates re-selects its beams and asks again (up to
``refills`` times), so even round 1 from a small logged prompt set scores thousands of candidates.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Sequence

import numpy as np

from cpo_engine.exceptions import ConfigError
from cpo_engine.search.candidates import Candidate, unique
from cpo_engine.search.config import BeamConfig
from cpo_engine.search.proposers import Feedback, Proposer
from cpo_engine.search.scoring import CandidateScorer, ScoredBatch
from cpo_engine.utils import progress_bar


@dataclass
class SearchResult:
    """All scored candidates, the per-query top-k and static ranking over them, and the trace.

    Arrays over candidates follow ``candidates``; ``topk_index`` etc. are (n_queries, top_k).
    """

    candidates: list[Candidate]
    T: np.ndarray
    distance: np.ndarray
    static_effect: np.ndarray
    static_se: np.ndarray
    static_objective: np.ndarray
    topk_index: np.ndarray
    topk_value: np.ndarray
    topk_effect: np.ndarray
    topk_se: np.ndarray
    trace: list[dict[str, Any]] = field(default_factory=list)
    z: float = 1.0
    _index: dict[str, Candidate] = field(default_factory=dict, repr=False, compare=False)

    @property
    def best_static(self) -> int:
        """Index of the candidate with the best static objective."""
        return int(np.argmax(self.static_objective))

    def query_wins(self) -> np.ndarray:
        """For each candidate, how many queries rank it first."""
        top1 = self.topk_index[:, 0]
        return np.bincount(top1[top1 >= 0], minlength=len(self.candidates))

    def ranking(self, n: int | None = None) -> np.ndarray:
        """Candidate indices by static objective, best first (excluded ones last)."""
        order = np.argsort(-self.static_objective, kind="stable")
        return order if n is None else order[:n]

    def lineage(self, i: int) -> str:
        """'seed -> op -> op' path of candidate ``i``."""
        by_id = self._by_id()
        c, steps = self.candidates[i], []
        while c.parent is not None and c.parent in by_id:
            steps.append(c.operator or "?")
            c = by_id[c.parent]
        return " -> ".join([c.id] + steps[::-1])

    def _by_id(self) -> dict[str, Candidate]:
        # built once: lineage() is called for every candidate of a thousands-strong archive
        if len(self._index) != len(self.candidates):
            self._index = {c.id: c for c in self.candidates}
        return self._index

    def table(self, level: float = 0.95) -> Any:
        """A pyarrow table: one row per candidate with lineage, static uplift, interval, support."""
        import pyarrow as pa

        zq = NormalDist().inv_cdf(0.5 + level / 2)
        cols = {k: [getattr(c, k) for c in self.candidates] for k in
                ("id", "text", "parent", "operator", "family", "round", "second_parent")}
        cols.update(static_effect=self.static_effect, static_se=self.static_se,
                    ci_low=self.static_effect - zq * self.static_se, ci_high=self.static_effect + zq * self.static_se,
                    objective=self.static_objective, mahalanobis=self.distance,
                    in_support=np.isfinite(self.static_objective), query_wins=self.query_wins(),
                    n_words=np.array([len(c.text.split()) for c in self.candidates]))
        order = self.ranking()
        return pa.table({k: pa.array([v[i] for i in order]) if isinstance(v, list) else pa.array(np.asarray(v)[order])
                         for k, v in cols.items()})


@dataclass
class _Step:
    """What one scoring pass of a round did (a round has one, or more with refills)."""

    scored: int
    excluded: int
    seconds: float
    pairs: int


class _Archive:
    """Scored candidates so far, with the running per-query top-k merged batch by batch."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.cands: list[Candidate] = []
        self.keys: set[str] = set()
        self.parts: list[ScoredBatch] = []
        self.top: tuple[np.ndarray, ...] | None = None
        self.trace: list[dict[str, Any]] = []

    def add(self, cands: list[Candidate], batch: ScoredBatch) -> None:
        offset = len(self.cands)
        self.cands.extend(cands)
        self.keys.update(c.key for c in cands)
        self.parts.append(batch)
        t = batch.topk
        new = (t.values, np.where(t.indices >= 0, t.indices + offset, -1), t.effect, t.se)
        self.top = new if self.top is None else _merge(self.top, new, self.k)

    def column(self, name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in self.parts])


def _merge(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...], k: int) -> tuple[np.ndarray, ...]:
    """Per-row top-k of two top-k lists (values, index, effect, se); earlier entries win ties."""
    cat = [np.concatenate([x, y], axis=1) for x, y in zip(a, b)]
    order = np.argsort(-cat[0], axis=1, kind="stable")[:, :k]
    return tuple(np.take_along_axis(x, order, axis=1) for x in cat)


class BeamSearch:
    """Batched beam search (see the module docstring).

    Parameters
    ----------
    proposer : Proposer
        Makes children (:class:`EditProposer` or :class:`LLMProposer`).
    scorer : CandidateScorer
        Scores texts for every query.
    config : BeamConfig
        Rounds, widths, k.
    query_texts : sequence of str, optional
        Texts of the scorer's queries, for LLM-proposer feedback.
    """

    def __init__(self, proposer: Proposer, scorer: CandidateScorer, config: BeamConfig | None = None,
                 query_texts: Sequence[str] | None = None) -> None:
        self.proposer, self.scorer = proposer, scorer
        self.config = config or BeamConfig()
        self.query_texts = list(query_texts) if query_texts is not None else None

    def run(self, seeds: Sequence[Candidate]) -> SearchResult:
        """Score the seeds, then run ``config.rounds`` proposal rounds; returns the whole archive."""
        seeds = unique(seeds)
        if not seeds:
            raise ConfigError("beam search needs at least one seed prompt")
        arch = _Archive(self.config.top_k)
        # one bar over the candidates to score (the seeds, then each round's budget): scoring time is per
        # candidate, so its rate and ETA hold (a bar over rounds counted the seeds, the quickest, as a round)
        self._bar = bar = progress_bar(len(seeds) + self.config.rounds * self.config.round_budget, "search",
                                       " candidates")
        t0 = time.perf_counter()
        self._trace(arch, 0, len(seeds), [self._score_into(arch, seeds)], t0)
        beams = self._select(arch)
        for r in range(1, self.config.rounds + 1):
            t0 = time.perf_counter()
            steps, proposed, beams = self._round(arch, beams, r)
            if not steps:
                arch_trace_empty(arch, r, proposed)
                break
            self._trace(arch, r, proposed, steps, t0)
            bar.set_postfix(round=r, refresh=False)
        bar.total = bar.n  # a round that found fewer new candidates than its budget: the bar ends where it is
        bar.close()
        self._bar = None
        return self._result(arch)

    def _round(self, arch: _Archive, beams: list[Candidate], r: int) -> tuple[list[_Step], int, list[Candidate]]:
        """Propose, deduplicate against everything seen, score; refill while short of the round budget."""
        steps: list[_Step] = []
        proposed, want = 0, self.config.children_per_beam
        for _ in range(1 + self.config.refills):
            kids = self.proposer.propose(beams, want, round=r, seen=arch.keys, feedback=self._feedback(arch, beams))
            proposed += len(kids)
            fresh = unique(kids, arch.keys)
            if not fresh:
                break
            steps.append(self._score_into(arch, fresh))
            beams = self._select(arch)
            missing = self.config.round_budget - sum(s.scored for s in steps)
            if missing <= 0:
                break
            want = -(-missing // max(1, len(beams)))
        return steps, proposed, beams

    def _score_into(self, arch: _Archive, cands: list[Candidate]) -> _Step:
        batch = self.scorer.score_texts([c.text for c in cands], self.config.top_k)
        arch.add(cands, batch)
        if getattr(self, "_bar", None) is not None:
            self._bar.update(len(cands))
        return _Step(scored=len(cands), excluded=int(np.sum(~np.isfinite(batch.static_objective))),
                     seconds=batch.seconds, pairs=self.scorer.n_queries * len(cands))

    def _trace(self, arch: _Archive, round: int, proposed: int, steps: list[_Step], t0: float) -> None:
        obj = arch.column("static_objective")
        best = int(np.argmax(obj))
        seconds, pairs = sum(s.seconds for s in steps), sum(s.pairs for s in steps)
        arch.trace.append({
            "round": round, "proposed": proposed, "scored": sum(s.scored for s in steps), "steps": len(steps),
            "archive": len(arch.cands), "excluded": sum(s.excluded for s in steps),
            "best_static_objective": float(obj[best]), "best_static_id": arch.cands[best].id,
            "best_static_effect": float(arch.column("static_effect")[best]),
            "mean_query_best_objective": float(np.mean(_finite(arch.top[0][:, 0]))),
            "score_seconds": seconds, "pairs_scored": pairs,
            "pairs_per_second": pairs / seconds if seconds > 0 else None,
            "round_seconds": time.perf_counter() - t0,
        })

    def _select(self, arch: _Archive) -> list[Candidate]:
        obj = arch.column("static_objective")
        order = [int(i) for i in np.argsort(-obj, kind="stable") if np.isfinite(obj[i])]
        chosen = order[: self.config.beam_width]
        if self.config.query_beams:
            top1 = arch.top[1][:, 0]
            wins = np.bincount(top1[top1 >= 0], minlength=len(arch.cands))
            by_wins = [int(i) for i in np.argsort(-wins, kind="stable") if wins[i] > 0 and i not in chosen]
            chosen += by_wins[: self.config.query_beams]
        return [arch.cands[i] for i in chosen]

    def _feedback(self, arch: _Archive, beams: list[Candidate]) -> dict[str, Feedback] | None:
        n = self.config.feedback_examples
        if not n or self.query_texts is None or not getattr(self.proposer, "wants_feedback", False):
            return None
        idx = {c.id: i for i, c in enumerate(arch.cands)}
        T = arch.column("T")[[idx[b.id] for b in beams]]
        eff, se = self.scorer.per_query(T)
        s_eff, s_se = arch.column("static_effect"), arch.column("static_se")
        out = {}
        for j, b in enumerate(beams):
            i, order = idx[b.id], np.argsort(-eff[:, j], kind="stable")
            out[b.id] = Feedback(
                summary=f"predicted uplift {s_eff[i]:+.3f} (se {s_se[i]:.3f}) over the reference prompt",
                strong=[self.query_texts[q] for q in order[:n]],
                weak=[self.query_texts[q] for q in order[::-1][:n]])
        return out

    def _result(self, arch: _Archive) -> SearchResult:
        vals, index, eff, se = arch.top
        return SearchResult(
            candidates=list(arch.cands), T=arch.column("T"), distance=arch.column("distance"),
            static_effect=arch.column("static_effect"), static_se=arch.column("static_se"),
            static_objective=arch.column("static_objective"), topk_index=index, topk_value=vals,
            topk_effect=eff, topk_se=se, trace=arch.trace, z=self.scorer.z)


def arch_trace_empty(arch: _Archive, round: int, proposed: int) -> None:
    """Record a round whose proposer had nothing new to offer (the search stops there)."""
    arch.trace.append({"round": round, "proposed": proposed, "scored": 0, "archive": len(arch.cands),
                       "stopped": "no new candidates"})


def _finite(x: np.ndarray) -> np.ndarray:
    f = x[np.isfinite(x)]
    return f if f.size else np.array([np.nan])


__all__ = ["BeamSearch", "SearchResult"]
