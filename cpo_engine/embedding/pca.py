"""PCA in torch: the same code on CPU and CUDA, fitted from a matrix or a stream of batches.

The fit accumulates the mean and the scatter matrix in float64 batch by batch, so memory stays at
O(d^2) whatever the number of rows, then takes the eigendecomposition of the covariance. Signs
follow scikit-learn's convention (the largest-magnitude loading of each component is positive), so
results match `sklearn.decomposition.PCA(svd_solver='full')` up to floating point.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from cpo_engine.exceptions import ConfigError, CPOError, DataError, NotFittedError
from cpo_engine.utils import atomic_path, resolve_device

FORMAT = "cpo-pca/1"


class TorchPCA:
    """Principal component analysis on torch tensors.

    Parameters
    ----------
    n_components : int, float or None
        int: number of components; float in (0, 1): the fewest components whose explained variance
        ratio sums to at least this; None: all (min(n_samples - 1, n_features)).
    device : {'auto', 'cpu', 'cuda', 'cuda:N'}
        Where the fit runs; results are returned as NumPy arrays.
    batch_size : int
        Rows per step when fitting or transforming a large matrix.
    """

    def __init__(self, n_components: int | float | None = None, device: str = "auto", batch_size: int = 65536) -> None:
        self.n_components = n_components
        self.device = device
        self.batch_size = batch_size

    def fit(self, Z: np.ndarray | Iterable[np.ndarray]) -> "TorchPCA":
        """Fit on an (n, d) array or an iterable of (n_i, d) batches."""
        self._check_params()
        device = resolve_device(self.device)
        n, total, scatter = 0, None, None
        for batch in self._batches(Z):
            b = torch.as_tensor(np.asarray(batch), dtype=torch.float64, device=device)
            if total is None:
                total = torch.zeros(b.shape[1], dtype=torch.float64, device=device)
                scatter = torch.zeros(b.shape[1], b.shape[1], dtype=torch.float64, device=device)
            n += b.shape[0]
            total += b.sum(0)
            scatter += b.T @ b
        if total is None or n < 2:
            raise ConfigError(f"PCA needs at least 2 rows, got {n}")
        mean = total / n
        cov = (scatter - n * torch.outer(mean, mean)) / (n - 1)
        evals, evecs = torch.linalg.eigh(cov)
        evals, evecs = evals.flip(0).clamp_min(0.0), evecs.flip(1)
        self._set_fitted(mean, evals, evecs.T, n)
        return self

    def _check_params(self) -> None:
        k = self.n_components
        if k is None or (isinstance(k, int) and not isinstance(k, bool) and k >= 1):
            return
        if isinstance(k, float) and 0.0 < k < 1.0:
            return
        raise ConfigError(f"The 'n_components' parameter of TorchPCA must be an int >= 1, a float in (0, 1) or "
                          f"None, got {k!r}")

    def _batches(self, Z: np.ndarray | Iterable[np.ndarray]) -> Iterable[np.ndarray]:
        if isinstance(Z, (np.ndarray, torch.Tensor)):
            if Z.ndim != 2:
                raise ConfigError(f"PCA input must be 2-D (n_samples, n_features), got shape {tuple(Z.shape)}")
            return (Z[i:i + self.batch_size] for i in range(0, Z.shape[0], self.batch_size))
        return Z

    def _set_fitted(self, mean: torch.Tensor, evals: torch.Tensor, comps: torch.Tensor, n: int) -> None:
        d = comps.shape[1]
        rank = min(n - 1, d)
        total_var = evals.sum().clamp_min(1e-300)
        ratio = evals / total_var
        k = self._choose_k(ratio[:rank], rank)
        comps = comps[:k]
        flip = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True)))
        comps = comps * torch.where(flip == 0, torch.ones_like(flip), flip)
        self.mean_ = mean.cpu().numpy()
        self.components_ = comps.cpu().numpy()
        self.explained_variance_ = evals[:k].cpu().numpy()
        self.explained_variance_ratio_ = ratio[:k].cpu().numpy()
        self.n_components_ = int(k)
        self.n_features_in_ = int(d)
        self.n_samples_ = int(n)

    def _choose_k(self, ratio: torch.Tensor, rank: int) -> int:
        k = self.n_components
        if k is None:
            return rank
        if isinstance(k, float):
            return int(min(rank, int(torch.searchsorted(ratio.cumsum(0), torch.tensor(k, dtype=ratio.dtype,
                                                                                         device=ratio.device)).item()) + 1))
        if k > rank:
            raise ConfigError(f"n_components={k} is more than the data supports (min(n_samples - 1, n_features) = "
                              f"{rank}); lower it or pass a variance fraction such as 0.9")
        return int(k)

    def transform(self, Z: np.ndarray) -> np.ndarray:
        """Project (n, d) rows onto the fitted components: (n, n_components) float64."""
        self._check_fitted()
        Z = np.asarray(Z, dtype=np.float64)
        if Z.ndim != 2 or Z.shape[1] != self.n_features_in_:
            raise ConfigError(f"PCA was fitted on {self.n_features_in_} features, got input of shape {Z.shape}")
        device = resolve_device(self.device)
        comps = torch.as_tensor(self.components_, device=device)
        mean = torch.as_tensor(self.mean_, device=device)
        out = np.empty((Z.shape[0], self.n_components_), dtype=np.float64)
        for i in range(0, Z.shape[0], self.batch_size):
            b = torch.as_tensor(Z[i:i + self.batch_size], device=device)
            out[i:i + b.shape[0]] = ((b - mean) @ comps.T).cpu().numpy()
        return out

    def fit_transform(self, Z: np.ndarray) -> np.ndarray:
        return self.fit(Z).transform(Z)

    def _check_fitted(self) -> None:
        if not hasattr(self, "components_"):
            raise NotFittedError(type(self).__name__)

    def save(self, path: str | os.PathLike[str], metadata: dict[str, Any] | None = None) -> Path:
        """Write the fitted state as safetensors with JSON metadata (no pickle)."""
        from safetensors.numpy import save_file

        self._check_fitted()
        meta = {"format": FORMAT, "n_components": json.dumps(self.n_components), "n_samples": str(self.n_samples_),
                "user": json.dumps(metadata or {})}
        tensors = {"mean": self.mean_, "components": self.components_,
                   "explained_variance": self.explained_variance_,
                   "explained_variance_ratio": self.explained_variance_ratio_}
        with atomic_path(path) as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp), metadata=meta)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str = "auto") -> "TorchPCA":
        """Read a state written by :meth:`save`; `metadata` holds what the caller stored with it.

        A missing, truncated or foreign file is a :class:`DataError` that names it and says how to
        rewrite it (never a safetensors or KeyError traceback).
        """
        from safetensors import safe_open

        fix = "rewrite it: rerun the `cpo run` / `cpo fit` / `cpo embed` that wrote it"
        if not Path(path).is_file():
            raise DataError("the PCA file is missing", source=str(path), fix=fix)
        try:
            with safe_open(str(path), framework="numpy") as f:
                meta = f.metadata() or {}
                if meta.get("format") != FORMAT:
                    raise ConfigError(f"{path} is not a cpo_engine PCA file (format {meta.get('format')!r}, "
                                      f"expected {FORMAT!r})")
                arrays = {k: f.get_tensor(k) for k in f.keys()}
            pca = cls(n_components=json.loads(meta["n_components"]), device=device)
            pca.mean_, pca.components_ = arrays["mean"], arrays["components"]
            pca.explained_variance_ = arrays["explained_variance"]
            pca.explained_variance_ratio_ = arrays["explained_variance_ratio"]
            pca.n_components_, pca.n_features_in_ = pca.components_.shape
            pca.n_samples_ = int(meta["n_samples"])
            pca.metadata = json.loads(meta.get("user", "{}"))
        except CPOError:
            raise
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type on a bad header
            raise DataError(f"cannot read this PCA file: it is truncated or corrupted ({type(exc).__name__}: {exc})",
                            source=str(path), fix=fix) from exc
        if pca.mean_.shape != (pca.n_features_in_,):
            raise DataError(f"the PCA file is inconsistent: mean {pca.mean_.shape}, components "
                            f"{pca.components_.shape}", source=str(path), fix=fix)
        return pca


__all__ = ["TorchPCA"]
