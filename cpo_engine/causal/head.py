"""The linear effect head: the part of a fitted causal reward model that search scores with.

A fitted :class:`~cpo_engine.causal.CausalRewardModel` has the final stage
``theta(X) = B^T phi(X)``; the predicted effect of moving a prompt from the reference
representation ``T_ref`` to ``T_c`` on a query with features ``X_q`` is

    effect(q, c) = phi(X_q)^T B (T_c - T_ref)

and its variance is ``v^T cov v`` with ``v = vec(phi(X_q) (T_c - T_ref)^T)``, flattened row-major
over ``(feature f, treatment dim t)``, i.e. index ``f * d_T + t``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class LinearHead:
    """Everything a batched scorer needs from a fitted linear-in-phi DML model.

    Attributes
    ----------
    coef : ndarray of shape (d_phi, d_T)
        ``B`` above: row ``f`` is the effect of the prompt features scaled by ``phi_f(X)``.
    cov : ndarray of shape (d_phi * d_T, d_phi * d_T)
        Covariance of ``vec(B)`` (row-major, index ``f * d_T + t``), cluster-robust by query.
    featurize : callable
        ``phi``: maps query features ``X`` of shape (n, d_X) to (n, d_phi).
    t_ref : ndarray of shape (d_T,)
        The reference prompt representation effects are measured from.
    point_coef : ndarray of shape (d_phi, d_T), optional
        A (penalized) point estimate for rankings by point estimate only (:meth:`point_effect`);
        ``coef`` when None. ``coef`` and ``cov`` are the unpenalized fit: intervals use them.
    split : (LinearHead, LinearHead), optional
        Heads fitted on two disjoint halves of the queries, ``(select, estimate)``: honest selection
        chooses with the first and reports the chosen prompt's effect from the second, which the
        choice never saw. Same featurizer and reference as this head.
    """

    coef: np.ndarray
    cov: np.ndarray
    featurize: Callable[[np.ndarray], np.ndarray]
    t_ref: np.ndarray
    point_coef: np.ndarray | None = None
    split: "tuple[LinearHead, LinearHead] | None" = None

    def __post_init__(self) -> None:
        d_phi, d_t = self.coef.shape
        if self.cov.shape != (d_phi * d_t, d_phi * d_t):
            raise ValueError(
                f"LinearHead.cov must have shape {(d_phi * d_t, d_phi * d_t)} for coef of shape "
                f"{self.coef.shape}, got {self.cov.shape}"
            )
        if self.t_ref.shape != (d_t,):
            raise ValueError(f"LinearHead.t_ref must have shape ({d_t},), got {self.t_ref.shape}")
        if self.point_coef is not None and self.point_coef.shape != self.coef.shape:
            raise ValueError(f"LinearHead.point_coef must have the shape of coef {self.coef.shape}, "
                             f"got {self.point_coef.shape}")
        if self.split is not None and any(h.coef.shape != self.coef.shape for h in self.split):
            raise ValueError("LinearHead.split heads must have the shape of coef")

    def with_reference(self, t_ref: np.ndarray) -> "LinearHead":
        """The same head (and split heads) measuring effects from ``t_ref``."""
        t = np.asarray(t_ref, dtype=np.float64).copy()
        split = None if self.split is None else tuple(replace(h, t_ref=t) for h in self.split)
        return replace(self, t_ref=t, split=split)

    def select_head(self) -> "LinearHead":
        """The head a choice among candidates is made with: the selection half, or this head."""
        return self if self.split is None else self.split[0]

    def estimate_head(self) -> "LinearHead":
        """The head a chosen prompt's effect is reported from: the held-out half, or this head (whose
        estimate of a chosen prompt is then selection-biased)."""
        return self if self.split is None else self.split[1]

    def point_effect(self, X: np.ndarray, T: np.ndarray) -> np.ndarray:
        """Point effect (``point_coef``) of every candidate on every query: (n_queries, n_candidates)."""
        phi = self.featurize(np.asarray(X, dtype=np.float64))
        coef = self.coef if self.point_coef is None else self.point_coef
        return phi @ coef @ (np.asarray(T, dtype=np.float64) - self.t_ref).T

    @property
    def d_phi(self) -> int:
        return int(self.coef.shape[0])

    @property
    def d_t(self) -> int:
        return int(self.coef.shape[1])

    def effect(self, X: np.ndarray, T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Dense reference scorer: effect and standard error for every (query, candidate).

        Returns two arrays of shape (n_queries, n_candidates). Materializes the full matrix: for
        large batches use :func:`cpo_engine.kernels.dispatch.score_topk`, which this is the specification of.
        """
        phi = self.featurize(np.asarray(X, dtype=np.float64))
        dt = np.asarray(T, dtype=np.float64) - self.t_ref
        est = phi @ self.coef @ dt.T
        cov4 = self.cov.reshape(self.d_phi, self.d_t, self.d_phi, self.d_t)
        # var[q, c] = sum phi[q,f] dt[c,t] cov[f,t,g,s] phi[q,g] dt[c,s]
        w = np.einsum("ct,ftgs,cs->cfg", dt, cov4, dt)
        var = np.einsum("qf,cfg,qg->qc", phi, w, phi)
        return est, np.sqrt(np.clip(var, 0.0, None))

    def static_effect(self, X: np.ndarray, T: np.ndarray,
                      t_base: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Effect of each candidate averaged over the queries ``X``, and its standard error.

        The query-averaged ("static") effect of candidate ``c`` is ``mean_q phi(X_q)^T B (T_c - t_base)``;
        since the head is linear in ``phi``, it is the effect at the mean ``phi``, and its variance
        is exact (not an average of per-query variances).

        Parameters
        ----------
        X : ndarray of shape (n_queries, d_X)
            Query features to average over.
        T : ndarray of shape (n_candidates, d_T)
            Candidate prompt representations.
        t_base : ndarray of shape (d_T,), optional
            The prompt effects are measured from; defaults to :attr:`t_ref`.

        Returns
        -------
        effect, se : ndarray of shape (n_candidates,)
        """
        phibar = self.featurize(np.asarray(X, dtype=np.float64)).mean(0)
        base = self.t_ref if t_base is None else np.asarray(t_base, dtype=np.float64)
        return self.effect_at(phibar, np.asarray(T, dtype=np.float64) - base)

    def effect_at(self, phi: np.ndarray, dt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Effect ``phi^T B dt_c`` and its standard error for one feature row ``phi`` (d_phi,) and many
        candidate moves ``dt`` (n, d_T), through the (d_T, d_T) covariance of ``theta = B^T phi``: cost
        O(n d_T^2) however many candidates."""
        phi = np.asarray(phi, dtype=np.float64)
        cov4 = self.cov.reshape(self.d_phi, self.d_t, self.d_phi, self.d_t)
        v_theta = np.einsum("f,ftgs,g->ts", phi, cov4, phi)
        eff = dt @ (phi @ self.coef)
        var = np.einsum("ct,ts,cs->c", dt, v_theta, dt)
        return eff, np.sqrt(np.clip(var, 0.0, None))

