"""Helpers shared by the torch nuisances: the torch import, device resolution, 2-D targets, the base
class (multi-output tag) and the JSON-safe parameters each model records when it is saved."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin

from cpo_engine.exceptions import ConfigError


def torch_module() -> Any:
    """``torch``, imported on first use (the registry and the config never need it)."""
    import torch

    return torch


def resolve_torch_device(device: str) -> Any:
    """``torch.device`` for ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``."""
    torch = torch_module()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device='{device}' was requested but CUDA is not available: use device='auto' or 'cpu'")
    return torch.device(device)


def as_2d(y: np.ndarray) -> tuple[np.ndarray, bool]:
    """``y`` as a float64 (n, k) array, and whether it was 1-D (predictions are returned alike)."""
    y = np.asarray(y, dtype=np.float64)
    return (y[:, None], True) if y.ndim == 1 else (y, False)


def saved_params(model: BaseEstimator) -> dict[str, Any]:
    """Constructor parameters worth recording in ``model.json``: JSON-safe ones, without ``device``
    (a loaded model runs on the CPU; the machine that saved it may have had a GPU)."""
    out = {}
    for key, value in model.get_params(deep=False).items():
        value = list(value) if isinstance(value, tuple) else value
        try:
            json.dumps(value)
        except TypeError:
            continue
        if key != "device":
            out[key] = value
    return out


class TorchNuisance(RegressorMixin, BaseEstimator):
    """Base of the nuisances implemented here: multi-output by construction.

    A subclass owns its persistence (see :mod:`cpo_engine.causal.persist`) with three methods:
    ``state_arrays() -> dict[str, ndarray]`` (the fitted arrays), ``meta() -> dict`` (JSON-safe
    settings) and the classmethod ``from_state(meta, arrays)`` (a fitted model on the CPU).
    They are not declared here on purpose: a subclass that forgets them is refused when a model is
    saved, instead of inheriting a stub that fails later.
    """

    multi_output: ClassVar[bool] = True
    """``fit`` takes a 2-D target (read by :func:`~cpo_engine.causal.nuisances.supports_multi_output`)."""


__all__ = ["TorchNuisance", "as_2d", "resolve_torch_device", "saved_params", "torch_module"]
