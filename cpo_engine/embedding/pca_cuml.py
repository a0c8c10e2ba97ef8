"""cuML twin of :class:`~cpo_engine.embedding.pca.TorchPCA` (the ``cuml`` extra, imported on first use).

:class:`TorchPCA` is the specification: the twin fits ``cuml.decomposition.PCA`` on the GPU and hands
its fitted state back as a :class:`TorchPCA` (same sign convention, same component choice for a
variance fraction), so saving, loading and transforming go through the one torch code path and a
model bundle never depends on cuML. Data moves between torch and cuML through CuPy/DLPack
(:func:`cpo_engine.utils.to_cupy`, :func:`~cpo_engine.utils.to_torch`): a CUDA tensor is fitted without
a host copy. ``tests/test_embedding_cuml.py`` pins the twin to TorchPCA wherever cuML imports.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cpo_engine.embedding.pca import TorchPCA


class CumlPCA:
    """PCA fitted by cuML, returned as a fitted :class:`TorchPCA`.

    Parameters
    ----------
    n_components : int, float or None
        As :class:`TorchPCA`: a count, a variance fraction in (0, 1), or None (all).
    device : str
        The CUDA device the fitted TorchPCA transforms on ('auto' keeps TorchPCA's choice).
    """

    def __init__(self, n_components: int | float | None = None, device: str = "auto") -> None:
        self.n_components = n_components
        self.device = device

    def fit(self, Z: Any | Iterable[Any]) -> TorchPCA:
        """Fit on an (n, d) array (NumPy, CuPy or a CUDA torch tensor) or an iterable of such batches
        (concatenated on the GPU); returns the fitted :class:`TorchPCA`."""
        from cpo_engine.utils import require, to_cupy, to_torch

        cuml = require("cuml", extra="cuml")
        cp = require("cupy", extra="cuml")
        ref = TorchPCA(self.n_components, device=self.device)
        ref._check_params()
        X = to_cupy(Z) if _is_matrix(Z) else cp.concatenate([to_cupy(b) for b in Z])
        X = X.astype(cp.float64, copy=False)
        n, d = X.shape
        model = cuml.decomposition.PCA(n_components=min(n, d), svd_solver="full", output_type="cupy")
        model.fit(X)
        # back to torch (DLPack, no host copy), then the reference's own bookkeeping: k, signs, ratios
        evals = to_torch(cp.asarray(model.explained_variance_)).double()
        comps = to_torch(cp.asarray(model.components_)).double()
        mean = to_torch(cp.asarray(model.mean_)).double()
        full = evals.new_zeros(d)
        full[: len(evals)] = evals
        ref._set_fitted(mean, full, comps if comps.shape[0] == d else _pad_rows(comps, d), int(n))
        return ref


def _is_matrix(Z: Any) -> bool:
    return hasattr(Z, "shape") and len(getattr(Z, "shape", ())) == 2


def _pad_rows(comps: Any, d: int) -> Any:
    """cuML keeps min(n, d) components; TorchPCA's bookkeeping expects d rows (the rest carry zero variance)."""
    import torch

    return torch.cat([comps, comps.new_zeros(d - comps.shape[0], comps.shape[1])])


def fit_pca(n_components: int | float | None, Z: Any, backend: str = "torch", device: str = "auto") -> TorchPCA:
    """A fitted :class:`TorchPCA` from the chosen backend: 'torch' (any device) or 'cuml' (CUDA, the twin)."""
    if backend == "cuml":
        return CumlPCA(n_components, device=device).fit(Z)
    return TorchPCA(n_components, device=device).fit(Z)


__all__ = ["CumlPCA", "fit_pca"]

