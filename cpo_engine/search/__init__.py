"""Offline-guided prompt search (CPO stage 2): proposers, batched beam search, trust region, pool mode.

Scoring needs no LLM call: candidates are embedded, projected with the prompt PCA and scored for
every query at once by the causal model's :class:`~cpo_engine.causal.head.LinearHead` through
:func:`kernels.score_topk`. See docs/search.md.
"""

from __future__ import annotations

from cpo_engine.search.beam import BeamSearch, SearchConfig, SearchResult
from cpo_engine.search.candidates import Candidate, candidate_id, dedup_key, unique
from cpo_engine.search.operators import OPERATORS, Operator, get_operators
from cpo_engine.search.pool import PoolPolicy, by_tier, evaluate_choice, outcome_matrix, paired_interval, pool_assign
from cpo_engine.search.proposers import EditPrior, EditProposer, Feedback, LLMProposer, Proposer
from cpo_engine.search.scoring import CandidateScorer, ScoredBatch
from cpo_engine.search.trust import TrustRegion

__all__ = [
    "BeamSearch", "SearchConfig", "SearchResult", "Candidate", "candidate_id", "dedup_key", "unique",
    "OPERATORS", "Operator", "get_operators", "PoolPolicy", "pool_assign", "outcome_matrix", "paired_interval",
    "evaluate_choice", "by_tier", "EditPrior", "EditProposer", "Feedback", "LLMProposer", "Proposer",
    "CandidateScorer", "ScoredBatch", "TrustRegion",
]
