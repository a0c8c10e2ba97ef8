"""Registry of the nuisance regressors of DML (``E[Y|X]`` and ``E[T|X]``), one module per implementation.

Importing this module imports no estimator: each name maps to ``"module:factory"``, imported when a
nuisance of that name is built. A factory takes ``(random_state=, device=)`` and returns a fresh,
unfitted estimator with the scikit-learn API (``get_params``/``fit``/``predict``).

Two kinds of entries:

- the factory is a class of this package (``ridge``, ``mlp``, torch, multi-output): a fitted model
  of that class is saved with a :class:`~cpo_engine.causal.CausalRewardModel`, so the class must
  implement ``state_arrays()``, ``meta()`` and the classmethod ``from_state(meta, arrays)``
  (:mod:`cpo_engine.causal.persist` refuses to save one that does not);
- the factory is a function building a third-party estimator (``hgb``, ``lgbm``, ``cuml_ridge``):
  its fitted state is not saved (a loaded model has its effects and head, not its nuisances).

To add a nuisance: write ``nuisances/<name>.py`` and add one line below.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Any, Callable

import numpy as np

_REGISTRY: dict[str, str] = {
    "ridge": "cpo_engine.causal.nuisances.ridge:TorchRidge",
    "mlp": "cpo_engine.causal.nuisances.mlp:TorchMLP",
    "hgb": "cpo_engine.causal.nuisances.hgb:make_hgb",
    "lgbm": "cpo_engine.causal.nuisances.lgbm:make_lgbm",
    "cuml_ridge": "cpo_engine.causal.nuisances.cuml:make_cuml",
}


def nuisance_names() -> tuple[str, ...]:
    """Registered nuisance names (light: importing this module imports no estimator)."""
    return tuple(_REGISTRY)


def check_nuisance_name(name: str, key: str) -> None:
    """Raise a ConfigError naming ``key`` and the closest registered nuisance when ``name`` is unknown."""
    from cpo_engine.exceptions import ConfigError

    names = nuisance_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"{key}: unknown nuisance '{name}'{hint}; registered: {', '.join(names)}")


def resolve(name: str) -> Callable[..., Any]:
    """The factory registered as ``name`` (imports its module); ConfigError for an unknown name."""
    check_nuisance_name(name, "nuisance")
    module, attr = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), attr)


def registered_name(model: Any) -> str | None:
    """The name whose factory is the class of ``model`` (None for third-party estimators)."""
    path = f"{type(model).__module__}:{type(model).__qualname__}"
    return next((name for name, target in _REGISTRY.items() if target == path), None)


def is_own_nuisance(model: Any) -> bool:
    """``model``'s class is defined in this package (so it must be registered and persistable)."""
    return type(model).__module__.startswith(__name__ + ".")


def persisted_nuisance_names() -> tuple[str, ...]:
    """Names whose fitted models are saved with a causal model (factory is a class of this package)."""
    return tuple(name for name in _REGISTRY if inspect.isclass(resolve(name)))


def make_nuisance(spec: Any, random_state: int = 0, device: str = "auto") -> Any:
    """Build a fresh nuisance regressor from a registered name, or clone a given estimator.

    Parameters
    ----------
    spec : str or estimator
        A registered name (:func:`nuisance_names`: ``ridge`` (torch closed form with a grouped-CV
        penalty), ``mlp`` (torch), ``hgb`` (scikit-learn HistGradientBoosting), ``lgbm``
        (LightGBM), ``cuml_ridge`` (cuML twin of a fixed-penalty ridge)), or any object with
        ``fit``/``predict`` (cloned with :func:`sklearn.base.clone`).
    random_state : int
        Seed passed to the factory.
    device : {"auto", "cpu", "cuda"}
        Where torch nuisances run (others ignore it).

    Raises
    ------
    ConfigError
        Unknown name (with the closest registered one) or an object without ``fit``/``predict``.
    """
    if isinstance(spec, str):
        return resolve(spec)(random_state=random_state, device=device)
    if not (hasattr(spec, "fit") and hasattr(spec, "predict")):
        from cpo_engine.exceptions import ConfigError

        raise ConfigError(f"a nuisance model needs fit() and predict(), got {type(spec).__name__}: pass a "
                          f"registered name ({', '.join(_REGISTRY)}) or a scikit-learn regressor")
    from sklearn.base import clone

    return clone(spec)


def supports_multi_output(model: Any) -> bool:
    """Whether ``model.fit`` accepts a 2-D target (the torch models and most linear models do)."""
    if getattr(type(model), "multi_output", False):
        return True
    try:
        from sklearn.utils import get_tags

        return bool(get_tags(model).target_tags.multi_output)
    except Exception:  # non-sklearn object without tags: assume it copes, it fails loudly if not
        return True


def fit_nuisance(model: Any, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None,
                 sample_weight: np.ndarray | None = None) -> Any:
    """Fit ``model`` on (X, y), wrapping single-output models for multi-output targets.

    ``groups`` goes to ``fit`` when its signature takes it (grouped CV inside the torch models).
    """
    if np.ndim(y) == 2 and not supports_multi_output(model):
        from sklearn.multioutput import MultiOutputRegressor

        model = MultiOutputRegressor(model)
    params = inspect.signature(model.fit).parameters
    kwargs: dict[str, Any] = {}
    if groups is not None and "groups" in params:
        kwargs["groups"] = groups
    if sample_weight is not None:
        if "sample_weight" not in params:
            from cpo_engine.exceptions import ConfigError

            raise ConfigError(f"{type(model).__name__}.fit does not take sample_weight: fit without "
                              "weights or choose a nuisance that takes them (ridge, hgb, lgbm)")
        kwargs["sample_weight"] = sample_weight
    return model.fit(X, y, **kwargs)


__all__ = ["fit_nuisance", "is_own_nuisance", "make_nuisance", "nuisance_names", "persisted_nuisance_names",
           "registered_name", "resolve", "supports_multi_output"]
