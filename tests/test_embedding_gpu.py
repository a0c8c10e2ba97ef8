"""Representations on the GPU against the CPU reference: TorchPCA on CUDA, its cuML twin, and the CuPy/DLPack
hand-off between torch and cuML (GPU tests skip without CUDA, cuML or CuPy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cpo_engine.embedding import TorchPCA, fit_pca
from cpo_engine.embedding.config import PCAConfig
from cpo_engine.exceptions import ConfigError, MissingExtraError
from cpo_engine.utils import to_torch


def _data(n: int = 2000, d: int = 24, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + rng.normal(size=d)


def test_torch_backend_and_config():
    Z = _data()
    a, b = fit_pca(5, Z, backend="torch", device="cpu"), TorchPCA(5, device="cpu").fit(Z)
    np.testing.assert_array_equal(a.components_, b.components_)
    with pytest.raises(ConfigError, match="pca.backend"):
        PCAConfig(backend="sklearn")


def test_to_torch_shares_numpy_memory():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = to_torch(a)
    a[0, 0] = 42.0
    assert t[0, 0].item() == 42.0  # a view, not a copy


def test_cuml_missing_is_a_clear_error():
    try:
        import cuml  # noqa: F401
    except ImportError:
        with pytest.raises(MissingExtraError, match="cuml"):
            fit_pca(3, _data(), backend="cuml")


@pytest.mark.gpu
def test_torch_pca_on_cuda_matches_cpu():
    Z = _data(n=5000, d=48)
    cpu = TorchPCA(8, device="cpu", batch_size=1000).fit(Z)
    gpu = TorchPCA(8, device="cuda", batch_size=1000).fit(Z)
    np.testing.assert_allclose(gpu.components_, cpu.components_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(gpu.explained_variance_, cpu.explained_variance_, rtol=1e-10)
    np.testing.assert_allclose(gpu.transform(Z[:100]), cpu.transform(Z[:100]), rtol=1e-8, atol=1e-10)


@pytest.mark.gpu
def test_dlpack_round_trip_has_no_host_copy():
    pytest.importorskip("cupy")
    from cpo_engine.utils import to_cupy

    t = torch.arange(12, dtype=torch.float32, device="cuda").reshape(3, 4)
    c = to_cupy(t)
    assert c.data.ptr == t.data_ptr()  # the same device memory
    back = to_torch(c)
    assert back.is_cuda and back.data_ptr() == t.data_ptr()


@pytest.mark.gpu
@pytest.mark.parametrize("n_components", [4, 0.9, None])
def test_cuml_pca_matches_torch_pca(n_components):
    pytest.importorskip("cuml")
    Z = _data()
    ref = TorchPCA(n_components, device="cpu").fit(Z)
    twin = fit_pca(n_components, torch.as_tensor(Z, device="cuda"), backend="cuml", device="cpu")
    assert twin.n_components_ == ref.n_components_
    np.testing.assert_allclose(twin.explained_variance_ratio_, ref.explained_variance_ratio_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(twin.mean_, ref.mean_, rtol=1e-9, atol=1e-9)
    # same sign convention as TorchPCA (and scikit-learn): equal, not only up to sign
    np.testing.assert_allclose(twin.components_, ref.components_, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(twin.transform(Z[:50]), ref.transform(Z[:50]), rtol=1e-5, atol=1e-6)
