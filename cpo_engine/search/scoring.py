"""Score candidate prompts for every query in one batched pass, without an LLM call.

:class:`CandidateScorer` turns texts into prompt representations (embedding through the cache, then
the prompt PCA: whatever ``embed`` does), adds the trust-region and length biases, and calls the one
scoring dispatch point :func:`cpo_engine.kernels.dispatch.score_topk` for the per-query top-k (query-dependent mode).
The static objective of a candidate is its effect averaged over the queries,
``mean_q phi(X_q)^T B dt_c = phibar^T B dt_c``, which is exact for a linear head and needs one row.

Selection is honest by default (:class:`~cpo_engine.search.config.SelectionConfig`): candidates are
ranked, and a query leaves the incumbent, by a lower bound that holds for every prompt at once
(:func:`selection_multiplier`), computed from the head fitted on one half of the training queries
(:meth:`LinearHead.select_head`); the uplift reported for a chosen prompt comes from the other half
(:meth:`LinearHead.estimate_head`), which the choice never saw.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from statistics import NormalDist
from typing import Callable, Sequence

import numpy as np

from cpo_engine.kernels import dispatch as kernels
from cpo_engine.causal.head import LinearHead
from cpo_engine.exceptions import ConfigError
from cpo_engine.search.config import SelectionConfig
from cpo_engine.search.trust import TrustRegion

log = logging.getLogger(__name__)


def selection_multiplier(z: float, d_t: int, simultaneous: bool) -> float:
    """The lower-bound multiplier: ``z`` (pointwise), or the Scheffe multiplier of the same level for
    all prompts at once, ``sqrt(chi2.ppf(Phi(z), d_T))``.

    For one query the effects of all candidates are ``theta_q . dt_c`` with ``theta_q`` in ``R^{d_T}``,
    so ``(theta_hat - theta)' V^-1 (theta_hat - theta) ~ chi2(d_T)`` bounds every direction ``dt`` at once:
    the bound stays valid for any number of candidates, including ones the search generated after
    looking at the estimates. ``z = 0`` (point estimates) stays 0.
    """
    if z <= 0:
        return 0.0
    if not simultaneous:
        return float(z)
    from scipy.stats import chi2

    return float(np.sqrt(chi2.ppf(NormalDist().cdf(z), max(int(d_t), 1))))


def estimate_label(honest: bool) -> str:
    """How a chosen prompt's reported uplift was estimated (for reports)."""
    if honest:
        return "estimated out of sample (held-out half of the training queries; the choice never saw it)"
    return "selection-biased (chosen and estimated on the same fit: expect it to be too high)"


@dataclass
class ScoredBatch:
    """Scores of one batch of candidates (arrays over candidates unless noted).

    Attributes
    ----------
    T : (n_c, d_T) representations.
    distance : Mahalanobis distance from the logged prompts (NaN without a trust region).
    bias : trust-region and length bias added to every query's objective (-inf: excluded).
    static_effect, static_se : mean effect over the queries and its standard error, from the head the
        search ranks with (the selection half when selection is honest).
    static_objective : ``static_effect - z * static_se + bias``.
    topk : :class:`kernels.TopK` over this batch, shape (n_queries, k); ``values`` rank (selection
        head), ``effect``/``se`` are the reported ones (estimation head).
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
        Lower-confidence-bound multiplier: candidates are ranked by ``effect - z * se`` (use
        :func:`selection_multiplier` for a simultaneous bound; :meth:`from_selection` does).
    split : bool
        Rank with ``head.select_head()`` and report effects of chosen pairs from
        ``head.estimate_head()`` (honest selection); without split heads, or False, one head does both.
    length_penalty : float
        Objective lost per 100 words of prompt (a cost proxy); 0 disables it.
    device, backend : str
        Passed to :func:`cpo_engine.kernels.dispatch.score_topk`.
    memory_budget_bytes : int, optional
        Cap on live score blocks (chunking); default: the kernel's.
    """

    def __init__(self, head: LinearHead, X: np.ndarray, embed: Callable[[Sequence[str]], np.ndarray],
                 trust_region: TrustRegion | None = None, z: float = SelectionConfig.z, length_penalty: float = 0.0,
                 device: str = "auto", backend: str = "auto", memory_budget_bytes: int | None = None,
                 split: bool = SelectionConfig.split) -> None:
        if z < 0 or length_penalty < 0:
            raise ConfigError(f"z and length_penalty must be >= 0, got z={z}, length_penalty={length_penalty}")
        self.head, self.embed, self.trust_region = head, embed, trust_region
        self.honest = bool(split) and head.split is not None
        self.rank_head = head.select_head() if self.honest else head
        self.report_head = head.estimate_head() if self.honest else head
        self.z, self.length_penalty = float(z), float(length_penalty)
        self.device, self.backend, self.memory_budget_bytes = device, backend, memory_budget_bytes
        self.phi = np.asarray(head.featurize(np.asarray(X, dtype=np.float64)), dtype=np.float64)
        self.phibar = self.phi.mean(axis=0, keepdims=True)

    @classmethod
    def from_selection(cls, head: LinearHead, X: np.ndarray, embed: Callable[[Sequence[str]], np.ndarray],
                       selection: SelectionConfig, T_logged: np.ndarray, device: str = "auto") -> "CandidateScorer":
        """The scorer of a :class:`SelectionConfig`, its trust region fitted on the logged prompts ``T_logged``."""
        trust = TrustRegion(mode=selection.trust_region, slack=selection.trust_slack).fit(T_logged)
        z = selection_multiplier(selection.z, head.d_t, selection.simultaneous)
        if selection.split and head.split is None:
            log.warning("selection.split is on but the model has no half-sample fits (saved by an older "
                        "version, or too few queries): one fit chooses and reports; uplifts are selection-biased")
        return cls(head, X, embed, trust_region=trust, z=z, length_penalty=selection.length_penalty,
                   device=device, split=selection.split)

    @property
    def estimate_label(self) -> str:
        """How this scorer's reported effects of chosen prompts were estimated."""
        return estimate_label(self.honest)

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
        rank = self.rank_head
        dt = T - rank.t_ref
        t0 = time.perf_counter()
        top = kernels.score_topk(self.phi, dt, rank.coef, rank.cov, k, z=self.z, bias=bias,
                                 device=self.device, backend=self.backend,
                                 memory_budget_bytes=self.memory_budget_bytes)
        if self.report_head is not rank:
            top = self._reported(top, dt)
        s_eff, s_se = rank.effect_at(self.phibar[0], dt)
        seconds = time.perf_counter() - t0
        return ScoredBatch(T=T, distance=dist, bias=bias, static_effect=s_eff, static_se=s_se,
                           static_objective=s_eff - self.z * s_se + bias, topk=top, seconds=seconds)

    def _reported(self, top: kernels.TopK, dt: np.ndarray) -> kernels.TopK:
        """The top-k with effect and se of its (query, candidate) pairs from the estimation head."""
        from dataclasses import replace

        eff, se = self.pairs(top.indices, dt)
        return replace(top, effect=eff, se=se)

    def pairs(self, index: np.ndarray, dt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Reported effect and se (estimation head) of candidate ``index[q, j]`` (rows of ``dt``, -1 for
        none) on query ``q``: two arrays shaped like ``index``, NaN where it is -1."""
        import torch

        from cpo_engine.kernels.score_topk_torch import gather_pairs

        rep = self.report_head
        ok = index >= 0
        cols = np.unique(index[ok])
        eff, se = np.full(index.shape, np.nan), np.full(index.shape, np.nan)
        if len(cols) == 0:
            return eff, se
        ph = kernels.prepare(self.phi, dt[cols], rep.coef, rep.cov, device="cpu", dtype=torch.float64)
        pos = np.searchsorted(cols, np.where(ok, index, cols[0]))  # pairs only: never the (n_q, n_c) matrix
        rows = np.broadcast_to(np.arange(index.shape[0])[:, None], index.shape)
        with torch.no_grad():
            e, s = gather_pairs(ph, torch.as_tensor(rows[ok]), torch.as_tensor(pos[ok]))
        eff[ok], se[ok] = e.numpy(), s.numpy()
        return eff, se

    def per_query(self, T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Dense (n_queries, n) effect and se of a few prompts from the head the search ranks with
        (pool mode's choice, feedback to proposers)."""
        rank = self.rank_head
        return kernels.score_dense(self.phi, np.asarray(T) - rank.t_ref, rank.coef, rank.cov)

    def point_effect(self, T: np.ndarray) -> np.ndarray:
        """Dense (n_queries, n) point effect of the full-data fit (``head.point_coef``: penalized when the
        model was), for point-estimate rankings."""
        h = self.head
        coef = h.coef if h.point_coef is None else h.point_coef
        return self.phi @ coef @ (np.asarray(T, dtype=np.float64) - h.t_ref).T

    def per_query_reported(self, T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Dense (n_queries, n) effect and se of a few prompts from the estimation head (reports)."""
        rep = self.report_head
        return kernels.score_dense(self.phi, np.asarray(T) - rep.t_ref, rep.coef, rep.cov)


__all__ = ["CandidateScorer", "ScoredBatch", "estimate_label", "selection_multiplier"]
