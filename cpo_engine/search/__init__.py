"""Offline-guided prompt search (CPO stage 2): proposers, batched beam search, trust region, pool mode.

Scoring needs no LLM call: candidates are embedded, projected with the prompt PCA and scored for
every query at once by the causal model's :class:`~cpo_engine.causal.head.LinearHead` through
:func:`cpo_engine.kernels.dispatch.score_topk`. See docs/search.md.

Names are imported on first use (PEP 562), so ``cpo_engine.search.config`` stays light for the CLI.
"""

from __future__ import annotations

from cpo_engine.utils import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "beam": ("BeamSearch", "SearchResult"),
    "candidates": ("Candidate", "dedup_key", "unique"),
    "config": ("BeamConfig", "ProposerConfig", "SelectionConfig"),
    "operators": ("OPERATORS", "Operator", "get_operators"),
    "pool": ("PoolPolicy", "by_tier", "evaluate_choice", "outcome_matrix", "paired_interval", "pool_assign",
             "referenced_head"),
    "proposers": ("EditProposer", "Feedback", "LLMProposer", "Proposer", "make_proposer"),
    "scoring": ("CandidateScorer", "ScoredBatch"),
    "select": ("select_per_query",),
    "trust": ("TrustRegion",),
})
