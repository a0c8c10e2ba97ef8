"""Query featurizations ``phi(X)`` for the linear-in-phi final stage of the causal reward model.

``theta(X) = B^T phi(X)``: the effect of prompt features on the score varies with the query through
``phi``. Featurizers here are deterministic, parameter-free apart from the input width, and described
by a small JSON-able spec, so a fitted model can be saved and reloaded without pickle.
"""

from __future__ import annotations

from itertools import combinations_with_replacement
from typing import Any

import numpy as np

from cpo_engine.exceptions import ConfigError

KINDS = ("constant", "linear", "poly2")


class Featurizer:
    """``phi(X)`` with a constant column first.

    Parameters
    ----------
    kind : {"constant", "linear", "poly2"}
        ``constant``: ``[1]`` (one effect for all queries); ``linear``: ``[1, X]``; ``poly2``:
        ``[1, X, X_i X_j for i <= j]`` in scikit-learn ``PolynomialFeatures(2)`` order.
    n_features : int, optional
        Number of query features the featurizer was built for; set by :meth:`fit`.
    """

    def __init__(self, kind: str = "linear", n_features: int | None = None) -> None:
        if kind not in KINDS:
            raise ConfigError(f"featurizer kind must be one of {KINDS}, got {kind!r}")
        self.kind = kind
        self.n_features = n_features

    def fit(self, X: np.ndarray) -> "Featurizer":
        """Record the input width of ``X`` (n, d_X); returns self."""
        self.n_features = int(np.asarray(X).shape[1])
        return self

    @property
    def n_output(self) -> int:
        """``d_phi``, the number of columns of ``phi(X)``."""
        d = self._width()
        return {"constant": 1, "linear": 1 + d, "poly2": 1 + d + d * (d + 1) // 2}[self.kind]

    def _width(self) -> int:
        if self.n_features is None:
            raise ValueError("Featurizer has no input width yet: call fit(X) first")
        return self.n_features

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Return ``phi(X)`` of shape (n, d_phi) in float64."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self._width():
            raise ValueError(
                f"featurizer expects X of shape (n, {self._width()}), got {X.shape}: pass the "
                "query features built with the same PCA the model was fitted with"
            )
        ones = np.ones((X.shape[0], 1))
        if self.kind == "constant":
            return ones
        if self.kind == "linear":
            return np.hstack([ones, X])
        pairs = list(combinations_with_replacement(range(X.shape[1]), 2))
        quad = np.stack([X[:, i] * X[:, j] for i, j in pairs], axis=1) if pairs else ones[:, :0]
        return np.hstack([ones, X, quad])

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return self.transform(X)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able spec; :meth:`from_dict` rebuilds an identical featurizer."""
        return {"kind": self.kind, "n_features": self.n_features}

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> "Featurizer":
        return cls(kind=spec["kind"], n_features=spec.get("n_features"))

    def __repr__(self) -> str:
        return f"Featurizer(kind={self.kind!r}, n_features={self.n_features})"


def as_featurizer(spec: "str | Featurizer | None") -> Featurizer:
    """Coerce a kind name (or None, meaning ``linear``) to a fresh :class:`Featurizer`."""
    if spec is None:
        return Featurizer("linear")
    if isinstance(spec, Featurizer):
        return Featurizer(spec.kind, spec.n_features)
    if isinstance(spec, str):
        return Featurizer(spec)
    raise ConfigError(
        f"featurizer must be one of {KINDS} or a Featurizer, got {type(spec).__name__}: "
        "arbitrary transformers cannot be saved without pickle"
    )
