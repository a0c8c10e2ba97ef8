"""Registry of the off-policy estimators of :mod:`cpo_engine.causal.ope`, one module per family.

In the shape of the nuisance registry (:mod:`cpo_engine.causal.nuisances`): each public module of this
package registers its estimators with :func:`register_estimator`, and the package's modules are imported
on the first question to the registry (:func:`estimator_names`, :func:`estimator_spec`), so that
``ope.estimator`` validation, ``cpo ope --estimator`` choices and help, and
:func:`~cpo_engine.causal.ope.estimate_policy_value` all read one list that no one writes by hand.

An estimator is a function of :class:`LoggedRows` (the logged rows of one target policy with their
importance weights, and the reward model's predictions when there is one) returning the *per-query
influence values*: one number per logged query whose mean is the estimate; the interval, the weight
diagnostics, the support bounds and the overlap warnings are computed from them by
:mod:`cpo_engine.causal.ope` for every estimator alike.

To add an estimator: write ``ope_estimators/<name>.py`` whose module decorates such a function with
:func:`register_estimator`. Nothing else changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import numpy as np

from cpo_engine.causal.evidence import ESTIMATED
from cpo_engine.exceptions import ConfigError
from cpo_engine.utils import Registry


def per_query_means(q: np.ndarray, *cols: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Unique queries (sorted) and, for each column, its mean over each query's rows."""
    queries, inv, counts = np.unique(q, return_inverse=True, return_counts=True)
    return queries, [np.bincount(inv, weights=c, minlength=len(queries)) / counts for c in cols]


@dataclass(frozen=True)
class LoggedRows:
    """What an estimator sees: the logged rows, the target policy's probability of each logged prompt and
    the importance weights; with a reward model, its prediction at the logged cell and the policy's value
    under it at the row's query.

    Attributes
    ----------
    q, a, y : array (n_rows,)
        Query index, logged prompt index and score of each row.
    target : array (n_rows,)
        ``pi(a | q)``: the target policy's probability of the logged prompt.
    w : array (n_rows,)
        Importance weight ``target / max(p, floor)`` (``p``: the logging propensity).
    q_hat_logged : array (n_rows,) or None
        The reward model's prediction ``q_hat(q, a)`` of each row's (query, logged prompt).
    dm : array (n_rows,) or None
        ``sum_a pi(a | q) q_hat(q, a)`` at each row's query (the direct method's value of that query).
    """

    q: np.ndarray
    a: np.ndarray
    y: np.ndarray
    target: np.ndarray
    w: np.ndarray
    q_hat_logged: np.ndarray | None = None
    dm: np.ndarray | None = None

    @cached_property
    def _groups(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        queries, inv, counts = np.unique(self.q, return_inverse=True, return_counts=True)
        return queries, inv, counts

    @property
    def queries(self) -> np.ndarray:
        """The logged queries (sorted): the rows of every per-query array."""
        return self._groups[0]

    def means(self, col: np.ndarray) -> np.ndarray:
        """The mean of a per-row column over each query's rows (every query counts once)."""
        queries, inv, counts = self._groups
        return np.bincount(inv, weights=col, minlength=len(queries)) / counts

    @cached_property
    def W(self) -> np.ndarray:
        """Per-query mean weight."""
        return self.means(self.w)

    @cached_property
    def Yw(self) -> np.ndarray:
        """Per-query mean weighted score (the IPW value of each query)."""
        return self.means(self.w * self.y)

    @cached_property
    def D(self) -> np.ndarray:
        """Per-query direct-method value (needs a reward model)."""
        return self.means(self._need(self.dm))

    @cached_property
    def Rw(self) -> np.ndarray:
        """Per-query mean weighted residual ``w (y - q_hat)`` (needs a reward model)."""
        return self.means(self.w * (self.y - self._need(self.q_hat_logged)))

    @staticmethod
    def _need(col: np.ndarray | None) -> np.ndarray:
        if col is None:
            raise ConfigError("this estimator needs a reward model (q_hat)")
        return col


@dataclass(frozen=True)
class EstimatorSpec:
    """A registered estimator.

    Attributes
    ----------
    name : str
        The value of ``ope.estimator`` (and of ``--estimator``) and the key of its estimates.
    fn : callable
        ``fn(rows: LoggedRows) -> array (n_queries,)``: per-query influence values.
    label : str
        Its name in words, in reports ("doubly robust").
    needs_reward_model : bool
        It uses ``q_hat`` (skipped when there is none; the headline then falls back to SNIPS).
    weighted : bool
        It uses the importance weights (its estimate carries their diagnostics: ESS, clipped share).
    evidence : str
        The kind of evidence behind its value (:mod:`cpo_engine.causal.evidence`).
    note : str
        A caveat printed with its value.
    default : bool
        Computed with every evaluation (else only when asked for, e.g. as the headline ``ope.estimator``).
    """

    name: str
    fn: Callable[[LoggedRows], np.ndarray]
    label: str
    needs_reward_model: bool = False
    weighted: bool = True
    evidence: str = ESTIMATED
    note: str = ""
    default: bool = False


_REGISTRY = Registry("OPE estimator", __name__, __path__)


def register_estimator(name: str, *, label: str, needs_reward_model: bool = False, weighted: bool = True,
                       evidence: str = ESTIMATED, note: str = "",
                       default: bool = False) -> Callable[[Callable[[LoggedRows], np.ndarray]], Callable]:
    """Decorator registering ``fn`` as the estimator ``name`` (see :class:`EstimatorSpec`).

    Examples
    --------
    >>> @register_estimator("ipw_mean", label="IPW, plain mean (a doctest)")
    ... def ipw_mean(rows):
    ...     return rows.Yw
    >>> estimator_spec("ipw_mean").needs_reward_model
    False
    >>> unregister_estimator("ipw_mean")
    """
    def decorate(fn: Callable[[LoggedRows], np.ndarray]) -> Callable[[LoggedRows], np.ndarray]:
        _REGISTRY.add(name, EstimatorSpec(name, fn, label, needs_reward_model, weighted, evidence, note, default), fn)
        return fn

    return decorate


def unregister_estimator(name: str) -> None:
    """Remove ``name`` from the registry (tests and notebooks that registered one of their own)."""
    _REGISTRY.remove(name)


def estimator_names(*, default: bool | None = None) -> tuple[str, ...]:
    """Registered estimator names, the default ones first (each group in registration order); only the
    default (or the other) ones when ``default`` is given."""
    specs = sorted(_REGISTRY.specs(), key=lambda s: not s.default)
    return tuple(s.name for s in specs if default is None or s.default == default)


def estimator_spec(name: str, key: str = "ope.estimator") -> EstimatorSpec:
    """The registered estimator ``name``; a ConfigError naming ``key``, the closest name and every name otherwise."""
    return _REGISTRY.get(name, key)


def estimator_help(names: tuple[str, ...] | None = None) -> str:
    """``name: label; ...`` for ``names`` (default: every registered estimator), for the CLI's help (argparse
    formats help with ``%``, so a ``%`` is doubled)."""
    return _REGISTRY.help(estimator_names() if names is None else names, lambda s: s.label)


__all__ = ["EstimatorSpec", "LoggedRows", "estimator_help", "estimator_names", "estimator_spec", "per_query_means",
           "register_estimator", "unregister_estimator"]
