"""Score candidate prompts for every query in one batched pass, without an LLM call.

:class:`CandidateScorer` turns texts into prompt representations (embedding through the cache, then
the prompt PCA: whatever ``embed`` does), adds the trust-region and length biases, and calls the one
scoring dispatch point :func:`cpo_engine.kernels.score_topk` for the per-query top-k (query-dependent mode).
The static objective of a candidate is its effect averaged over the queries,
``mean_q phi(X_q)^T B dt_c = phibar^T B dt_c``, which is exact for a linear head and needs one row.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from cpo_engine import kernels
from cpo_engine.causal.head import LinearHead
from cpo_engine.exceptions import ConfigError
from cpo_engine.search.config import SelectionConfig
from cpo_engine.search.trust import TrustRegion


@dataclass
class ScoredBatch:
    """Scores of one batch of candidates (arrays over candidates unless noted).

    Attributes
    ----------
    T : (n_c, d_T) representations.
    distance : Mahalanobis distance from the logged prompts (NaN without a trust region).
    bias : trust-region and length bias added to every query's objective (-inf: excluded).
    static_effect, static_se : mean effect over the queries and its standard error.
    static_objective : ``static_effect - z * static_se + bias``.
    topk : :class:`kernels.TopK` over this batch, shape (n_queries, k).
    seconds : wall time of the scoring pass (embedding excluded).
    """

    T: np.ndarray
    distance: np.ndarray
    bias: np.ndarray
    static_effect: np.ndarray
    static_se: np.ndarray
    static_objective: np.ndarray
    topk: kernels.TopK
    seconds: float


class CandidateScorer:
    """Everything needed to score prompt texts against a fixed set of queries.

    Parameters
    ----------
    head : LinearHead
        The fitted model's effect head.
    X : array (n_queries, d_X)
        Query representations (the query PCA's output).
    embed : callable
        ``texts -> T`` of shape (len(texts), d_T): the prompt encoder through the embedding cache,
        then the prompt PCA fitted on the logged prompts.
    trust_region : TrustRegion, optional
        Fitted trust region; None disables it.
    z : float
        Lower-confidence-bound multiplier: candidates are ranked by ``effect - z * se``.
    length_penalty : float
        Objective lost per 100 words of prompt (a cost proxy); 0 disables it.
    device, backend : str
        Passed to :func:`cpo_engine.kernels.score_topk`.
    memory_budget_bytes : int, optional
        Cap on live score blocks (chunking); default: the kernel's.
    """

    def __init__(self, head: LinearHead, X: np.ndarray, embed: Callable[[Sequence[str]], np.ndarray],
                 trust_region: TrustRegion | None = None, z: float = SelectionConfig.z, length_penalty: float = 0.0,
                 device: str = "auto", backend: str = "auto", memory_budget_bytes: int | None = None) -> None:
        if z < 0 or length_penalty < 0:
            raise ConfigError(f"z and length_penalty must be >= 0, got z={z}, length_penalty={length_penalty}")
        self.head, self.embed, self.trust_region = head, embed, trust_region
        self.z, self.length_penalty = float(z), float(length_penalty)
        self.device, self.backend, self.memory_budget_bytes = device, backend, memory_budget_bytes
        self.phi = np.asarray(head.featurize(np.asarray(X, dtype=np.float64)), dtype=np.float64)
        self.phibar = self.phi.mean(axis=0, keepdims=True)

    @classmethod
    def from_selection(cls, head: LinearHead, X: np.ndarray, embed: Callable[[Sequence[str]], np.ndarray],
                       selection: SelectionConfig, T_logged: np.ndarray, device: str = "auto") -> "CandidateScorer":
        """The scorer of a :class:`SelectionConfig`, its trust region fitted on the logged prompts ``T_logged``."""
        trust = TrustRegion(mode=selection.trust_region, slack=selection.trust_slack).fit(T_logged)
        return cls(head, X, embed, trust_region=trust, z=selection.z, length_penalty=selection.length_penalty,
                   device=device)

    @property
    def n_queries(self) -> int:
        return int(self.phi.shape[0])

    def represent(self, texts: Sequence[str]) -> np.ndarray:
        """Prompt representations of ``texts``, checked against the head's width."""
        T = np.asarray(self.embed(list(texts)), dtype=np.float64)
        if T.shape != (len(texts), self.head.d_t):
            raise ConfigError(f"embed returned shape {T.shape} for {len(texts)} texts; the model expects "
                              f"(n, {self.head.d_t}): use the prompt PCA the model was fitted with")
        return T

    def bias(self, texts: Sequence[str], T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(bias, distance) per candidate from the trust region and the length penalty."""
        if self.trust_region is None:
            bias, dist = np.zeros(len(texts)), np.full(len(texts), np.nan)
        else:
            bias, dist = self.trust_region.bias(T)
        words = np.array([len(t.split()) for t in texts], dtype=np.float64)
        return bias - self.length_penalty * words / 100.0, dist

    def score_texts(self, texts: Sequence[str], k: int) -> ScoredBatch:
        """Embed and score ``texts``: per-query top-k and static objective, one batched pass."""
        return self.score_T(texts, self.represent(texts), k)

    def score_T(self, texts: Sequence[str], T: np.ndarray, k: int) -> ScoredBatch:
        """Score candidates whose representations ``T`` are already known."""
        bias, dist = self.bias(texts, T)
        dt = T - self.head.t_ref
        t0 = time.perf_counter()
        top = kernels.score_topk(self.phi, dt, self.head.coef, self.head.cov, k, z=self.z, bias=bias,
                                 device=self.device, backend=self.backend,
                                 memory_budget_bytes=self.memory_budget_bytes)
        s_eff, s_se = kernels.score_dense(self.phibar, dt, self.head.coef, self.head.cov)
        seconds = time.perf_counter() - t0
        s_eff, s_se = s_eff[0], s_se[0]
        return ScoredBatch(T=T, distance=dist, bias=bias, static_effect=s_eff, static_se=s_se,
                           static_objective=s_eff - self.z * s_se + bias, topk=top, seconds=seconds)

    def per_query(self, T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Dense (n_queries, n) effect and se of a few prompts (pool mode, feedback, reports)."""
        return kernels.score_dense(self.phi, np.asarray(T) - self.head.t_ref, self.head.coef, self.head.cov)


__all__ = ["CandidateScorer", "ScoredBatch"]
