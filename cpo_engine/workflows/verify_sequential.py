"""The sequential design of the verify stage (``verify.design='sequential'``): the incumbent and every candidate
run on the sampled held-out queries, in a random order seeded by ``verify.seed`` (recorded as ``query_order``),
one batch (``verify.batch`` queries) at a time; after each batch every
candidate's anytime-valid confidence sequence for its mean paired uplift is updated
(:mod:`cpo_engine.causal.sequential`), and a candidate stops once it is decided (better: the CS lies above
``verify.margin``; worse: below 0) or the call budget ``verify.max_calls`` is spent. False promotions are at most
``verify.alpha`` over all candidates verified, however often one looks. Before any call it prints the smallest
uplift the budget can detect; afterwards the calls used and the stop reason of each candidate.

Each batch is one resumable generation store under ``OUT/llm/`` (:func:`cpo_engine.workflows.verify.run_arms`),
so rerunning a killed verification replays the stored batches and takes the same decisions.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa

from cpo_engine.causal.sequential import plan_statement, planned_queries, power_statement, sequential_verify
from cpo_engine.exceptions import DataError


def budget_calls(cfg: Any, n_queries: int, n_arms: int) -> int:
    """``verify.max_calls``, or what the fixed design would spend (every prompt on every sampled query)."""
    return int(cfg.max_calls or n_queries * n_arms * cfg.samples)


def run_sequential(queries: pa.Table, arms: Sequence[Any], cfg: Any,
                   run_batch: Callable[[pa.Table, list[Any]], tuple[pa.Table, dict[str, Any]]],
                   matrix: Callable[[pa.Table, list[str], list[str]], np.ndarray],
                   echo: Callable[[str], None] = print) -> tuple[pa.Table, dict[str, Any], dict[str, Any]]:
    """Run ``arms`` (``arms[0]`` the incumbent) sequentially; returns the generated rows, the merged generation
    summary and the ``sequential`` section of ``verification.json``.

    ``run_batch(queries, arms)`` runs the arms on a slice of the queries with the LLM (rows, summary);
    ``matrix(rows, query_ids, arm_ids)`` is their (queries, arms) mean score.
    """
    m, n = len(arms) - 1, queries.num_rows
    # a seeded random order: query ids often encode a kind or a difficulty, and the CS is about the mean of the
    # queries seen so far, so in id order a candidate would be decided on the first kind alone
    queries = queries.take(pa.array(np.random.default_rng([cfg.seed, 1]).permutation(n), pa.int64()))
    budget = budget_calls(cfg, n, len(arms))
    echo("sequential verification: " + plan_statement(min(planned_queries(budget, m, cfg.samples), n), m, cfg.alpha,
                                                      cfg.assumed_sd))
    tables, gens = [], []

    def draw(active: Sequence[int], start: int, stop: int) -> np.ndarray:
        batch = queries.slice(start, stop - start)
        run = [arms[0]] + [arms[i + 1] for i in active]
        rows, gen = run_batch(batch, run)
        tables.append(rows)
        gens.append(gen)
        Y = matrix(rows, batch.column("query_id").to_pylist(), [a.id for a in run])
        d = Y[:, 1:] - Y[:, :1]
        if np.any(np.abs(d[np.isfinite(d)]) > 1.0):
            raise DataError("the sequential design needs scores in [0, 1] (a paired difference outside [-1, 1] was "
                            "measured)", source=str(gen.get("store")), column="score",
                            fix="use a grader with scores in [0, 1], or set verify.design=fixed")
        return d.T

    res = sequential_verify(draw, m, n, budget, alpha=cfg.alpha, margin=cfg.margin, batch=cfg.batch,
                            samples=cfg.samples, sd=cfg.assumed_sd)
    rows = pa.concat_tables(tables, promote_options="permissive")
    gen = {"store": gens[0]["store"], "stores": [g["store"] for g in gens], "batches": len(gens),
           "errors_total": int(sum(g.get("errors_total", 0) for g in gens)),
           **{k: sum(g.get(k, 0) for g in gens) for k in ("generated", "errors", "prompt_tokens", "completion_tokens",
                                                           "wall_s")}}
    used = res.history[-1]["queries"] if res.history else 0
    section = {"design": "sequential", "rule": "anytime-valid hedged betting confidence sequence (Waudby-Smith & "
               "Ramdas 2024, Theorem 3; bets tuned to the planned queries), Bonferroni over candidates", "alpha": res.alpha,
               "cs_level_each": 1 - res.cs_alpha, "margin": cfg.margin, "batch": cfg.batch,
               "budget_calls": budget, "calls": res.calls, "looks": res.looks,
               "queries_used": used, "query_order": queries.column("query_id").to_pylist()[:used],
               "power": {"detectable_uplift": res.detectable, "power": 0.8, "assumed_sd": res.sd_assumed,
                         "queries_per_candidate": res.n_planned, "statement": power_statement(res)},
               "candidates": [{"id": arms[c.index + 1].id, "decision": c.decision, "stop_reason": c.stop_reason,
                               "queries": c.n, "calls": c.calls, "mean_uplift": c.mean,
                               "cs_low": c.ci_low, "cs_high": c.ci_high} for c in res.candidates]}
    for line in sequential_lines(section):
        echo(line)
    return rows, gen, section


def sequential_lines(section: dict[str, Any] | None) -> list[str]:
    """The sequential verification in words: the power statement, then calls and stop reason per candidate."""
    if not section:
        return []
    out = [f"Sequential verification ({section['rule']}): {section['power']['statement']}. Used {section['calls']} of "
           f"{section['budget_calls']} LLM calls in {section['looks']} look(s). The verdicts are the confidence "
           "sequences' decisions; the 95% intervals in the table describe the queries each prompt ran on and are "
           "not valid after early stopping."]
    for c in section["candidates"]:
        out.append(f"- `{c['id']}`: {c['stop_reason']} after {c['queries']} queries ({c['calls']} calls); mean "
                   f"uplift {c['mean_uplift']:+.3f}, {section['cs_level_each']:.2%} confidence sequence "
                   f"{c['cs_low']:+.3f} to {c['cs_high']:+.3f}")
    return out


def best_sequential(report: dict[str, Any]) -> dict[str, Any] | None:
    """The promotable candidate of a sequential verification: decided better, the largest mean uplift. The
    per-query policy is not part of the sequential design and is not promoted by it."""
    section = report["sequential"]
    better = {c["id"]: c for c in section["candidates"] if c["decision"] == "better"}
    ok = [a | {"kind": "static", "sequential": better[a["id"]]} for a in report["arms"] if a["id"] in better]
    return max(ok, key=lambda a: a["sequential"]["mean_uplift"]) if ok else None


__all__ = ["run_sequential", "sequential_lines", "best_sequential", "budget_calls"]
