"""Offline-guided prompt search (CPO stage 2): proposers, batched beam search, trust region, pool mode.

Scoring needs no LLM call: candidates are embedded, projected with the prompt PCA and scored for
every query at once by the causal model's :class:`~cpo_engine.causal.head.LinearHead` through
:func:`kernels.score_topk`. See docs/search.md.

Names are imported on first use (PEP 562), so ``cpo_engine.search.config`` stays light for the CLI.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "beam": ("BeamSearch", "SearchConfig", "SearchResult"),
    "candidates": ("Candidate", "candidate_id", "dedup_key", "unique"),
    "config": ("SearchStageConfig",),
    "operators": ("OPERATORS", "Operator", "get_operators"),
    "pool": ("PoolPolicy", "by_tier", "evaluate_choice", "outcome_matrix", "paired_interval", "pool_assign"),
    "proposers": ("EditPrior", "EditProposer", "Feedback", "LLMProposer", "Proposer"),
    "scoring": ("CandidateScorer", "ScoredBatch"),
    "trust": ("TrustRegion",),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'cpo_engine.search' has no attribute '{name}'")
    value = getattr(importlib.import_module(f"cpo_engine.search.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
