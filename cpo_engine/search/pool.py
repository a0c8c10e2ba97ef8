"""Pool mode: choose, per query, one prompt from a given set, and check the choice against outcomes.

The pool is usually the logged prompts, so recorded outcomes on held-out queries can say what the
per-query choice is worth: its value is the mean recorded score of the chosen prompt per query,
compared (paired, per query) with the best static prompt, i.e. the one prompt with the best mean
on the training queries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from cpo_engine.causal.verification import paired_interval
from cpo_engine.data.grid import cell_means, nan_mean
from cpo_engine.exceptions import DataError
from cpo_engine.search.scoring import CandidateScorer
from cpo_engine.search.select import select_per_query


@dataclass
class PoolPolicy:
    """A per-query choice among a pool of prompts.

    Attributes
    ----------
    prompt_ids : list of str
        The pool, in column order.
    choice : (n_queries,) int
        Index into ``prompt_ids`` chosen for each query.
    effect, se : (n_queries, n_pool)
        Reported effect of every pool prompt on every query, and its standard error (from the
        estimation half when selection is honest: see ``estimate``).
    objective : (n_queries, n_pool)
        Lower bound ``effect - z * se + bias`` of the head the choice is made with (the selection
        half when selection is honest): what the choice maximizes.
    z : float
        The lower-confidence-bound multiplier used.
    point : (n_queries, n_pool), optional
        Point estimate (+ bias) of the full-data, possibly penalized fit: the point-estimate policy.
    estimate : str
        How ``effect``/``se`` of a chosen prompt were estimated (out of sample, or selection-biased).
    incumbent : int, optional
        The pool prompt a query keeps unless another one's bound is strictly higher (:func:`select_per_query`).
    """

    prompt_ids: list[str]
    choice: np.ndarray
    effect: np.ndarray
    se: np.ndarray
    objective: np.ndarray
    z: float = 0.0
    point: np.ndarray | None = None
    estimate: str = ""
    incumbent: int | None = None

    @property
    def chosen_ids(self) -> list[str]:
        return [self.prompt_ids[i] for i in self.choice]

    def static_choice(self) -> int:
        """The pool prompt with the best objective averaged over the queries (a static choice, not per query)."""
        return int(np.argmax(self.objective.mean(axis=0)))

    def point_choice(self) -> np.ndarray:
        """The per-query choice by point estimate (``point``; without one, ``effect + bias``): the rule of
        :func:`select_per_query` with ``z = 0``."""
        point = self.objective + self.z * self.se if self.point is None else self.point
        return select_per_query(point, incumbent=self.incumbent)[0]

    def chosen(self) -> tuple[np.ndarray, np.ndarray]:
        """Effect and se of each query's chosen prompt."""
        rows = np.arange(len(self.choice))
        return self.effect[rows, self.choice], self.se[rows, self.choice]

    def assignment_table(self, query_ids: Sequence[str], texts: Sequence[str] | None = None,
                         source: str = "logged pool") -> Any:
        """One row per query: the recommended prompt (id and, when given, text), its predicted effect and
        se versus the reference, and where the prompt comes from."""
        import pyarrow as pa

        eff, se = self.chosen()
        cols: dict[str, Any] = {"query_id": pa.array([str(q) for q in query_ids]),
                                "recommended_prompt_id": pa.array(self.chosen_ids)}
        if texts is not None:
            cols["recommended_prompt_text"] = pa.array([texts[i] for i in self.choice])
        cols.update(effect=pa.array(eff), se=pa.array(se), source=pa.array([source] * len(self.choice)))
        return pa.table(cols)


def pool_assign(scorer: CandidateScorer, prompt_ids: Sequence[str], texts: Sequence[str],
                T_pool: np.ndarray | None = None, incumbent: int | None = None) -> PoolPolicy:
    """Score every pool prompt for every query and choose per query by :func:`select_per_query` (the best
    lower bound of the scorer's head; a query keeps ``incumbent`` unless another prompt's bound is higher).

    ``T_pool`` skips embedding when the pool's representations are known (the logged prompts).
    """
    T = scorer.represent(texts) if T_pool is None else np.asarray(T_pool, dtype=np.float64)
    bias, _ = scorer.bias(texts, T)
    eff, se = scorer.per_query(T)
    choice, obj = select_per_query(eff, se, scorer.z, bias=bias, incumbent=incumbent)
    rep_eff, rep_se = (eff, se) if scorer.report_head is scorer.rank_head else scorer.per_query_reported(T)
    point = scorer.point_effect(T) + bias[None, :]
    return PoolPolicy(prompt_ids=list(prompt_ids), choice=choice, effect=rep_eff, se=rep_se, objective=obj,
                      z=float(scorer.z), point=point, estimate=scorer.estimate_label,
                      incumbent=None if incumbent is None else int(incumbent))


def referenced_head(head: Any, X: np.ndarray, T_pool: np.ndarray, reference: str,
                    incumbent: int | None = None) -> tuple[Any, int]:
    """The head (and its split heads) re-referenced to the incumbent, or unchanged for
    ``reference='mean'``; returns it and the incumbent's index.

    The incumbent is the best static prompt, chosen from the logs by
    :func:`cpo_engine.causal.static_choice.choose_static` (pass its index). Without one (a pool of prompts
    no log has valued), it is the pool prompt with the best average predicted effect over ``X`` by the
    selection head: the estimation half, which reports uplifts over the incumbent, must not have chosen it.
    """
    if incumbent is None:
        eff, _ = head.select_head().static_effect(X, T_pool)
        inc = int(np.argmax(eff))
    else:
        inc = int(incumbent)
    if reference == "mean":
        return head, inc
    return head.with_reference(T_pool[inc]), inc


def outcome_matrix(table: Any, query_ids: Sequence[str], prompt_ids: Sequence[str]) -> np.ndarray:
    """(n_queries, n_prompts) mean recorded score per cell of a triplet table; NaN where unobserved."""
    q_index = {q: i for i, q in enumerate(query_ids)}
    p_index = {p: j for j, p in enumerate(prompt_ids)}
    qi = np.array([q_index.get(q, -1) for q in table.column("query_id").to_pylist()], dtype=np.int64)
    pj = np.array([p_index.get(p, -1) for p in table.column("prompt_id").to_pylist()], dtype=np.int64)
    ys = np.asarray(table.column("score").to_numpy(zero_copy_only=False), dtype=np.float64)
    keep = (qi >= 0) & (pj >= 0) & np.isfinite(ys)
    return cell_means(qi[keep], pj[keep], ys[keep], len(query_ids), len(prompt_ids))[0]


def evaluate_choice(choice: np.ndarray, Y: np.ndarray, static_index: int, level: float = 0.95) -> dict[str, Any]:
    """Value of a per-query choice on recorded outcomes ``Y`` (n_queries, n_pool), vs baselines.

    Queries where the chosen or the static prompt has no outcome are left out (and counted).
    Baselines: the static prompt, a uniformly random pool prompt (the row mean) and the oracle
    (the row max, an upper bound that peeks at the outcomes).
    """
    rows = np.arange(Y.shape[0])
    pol, stat = Y[rows, choice], Y[:, static_index]
    ok = np.isfinite(pol) & np.isfinite(stat)
    if not ok.any():
        raise DataError("no held-out query has outcomes for both the chosen and the static prompt",
                        fix="evaluate pool mode on data where every pool prompt ran on the held-out queries")
    rand, oracle = nan_mean(Y[ok], axis=1), np.nanmax(Y[ok], axis=1)  # a row of Y[ok] has its static outcome
    return {"policy_value": float(pol[ok].mean()), "static_value": float(stat[ok].mean()),
            "random_value": float(rand.mean()), "oracle_value": float(oracle.mean()),
            "vs_static": paired_interval(pol[ok], stat[ok], level), "n_queries": int(ok.sum()),
            "n_dropped": int((~ok).sum()), "share_not_static": float(np.mean(choice[ok] != static_index))}


def by_tier(choice: np.ndarray, Y: np.ndarray, static_index: int, n_tiers: int = 3) -> list[dict[str, Any]]:
    """Uplift of the per-query choice over the static prompt within query-difficulty tiers.

    Difficulty is 1 - the query's mean recorded score over the pool; tiers are its quantiles
    (tier 0 = easiest). For reports only: the tiering looks at outcomes, the choice does not.
    """
    rows = np.arange(Y.shape[0])
    difficulty = 1.0 - nan_mean(Y, axis=1)  # NaN for a query without outcomes: left out below
    pol, stat = Y[rows, choice], Y[:, static_index]
    ok = np.isfinite(pol) & np.isfinite(stat) & np.isfinite(difficulty)
    edges = np.quantile(difficulty[ok], np.linspace(0, 1, n_tiers + 1)) if ok.any() else np.zeros(n_tiers + 1)
    tier = np.clip(np.searchsorted(edges[1:-1], difficulty, side="right"), 0, n_tiers - 1)
    out = []
    for t in range(n_tiers):
        m = ok & (tier == t)
        row: dict[str, Any] = {"tier": t, "n": int(m.sum()), "difficulty_low": float(edges[t]),
                               "difficulty_high": float(edges[t + 1])}
        if m.sum() >= 2:
            row.update(policy_value=float(pol[m].mean()), static_value=float(stat[m].mean()),
                       **{f"uplift_{k}": v for k, v in paired_interval(pol[m], stat[m]).items() if k != "n"})
        out.append(row)
    return out


__all__ = ["PoolPolicy", "pool_assign", "referenced_head", "outcome_matrix", "paired_interval", "evaluate_choice", "by_tier"]
