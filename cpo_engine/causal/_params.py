"""scikit-learn's parameter protocol for the estimators users construct, without depending on its
``BaseEstimator``: ``get_params(deep=True)`` / ``set_params(**params)``, so ``sklearn.base.clone``,
``GridSearchCV``-style tuning and ``pipeline``-style nested names (``model_y__alpha``) work."""

from __future__ import annotations

import inspect
from typing import Any

from cpo_engine.exceptions import ConfigError


class ParamsMixin:
    """Constructor arguments stored under their own names (as every class here does) are the parameters."""

    @classmethod
    def _param_names(cls) -> list[str]:
        return [name for name, p in inspect.signature(cls.__init__).parameters.items()
                if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor parameters by name (scikit-learn's ``get_params``). With ``deep``, the parameters of
        estimator-valued parameters too, as ``name__param`` (e.g. ``model_y__alpha`` for a scikit-learn
        nuisance)."""
        out: dict[str, Any] = {}
        for name in self._param_names():
            value = getattr(self, name)
            out[name] = value
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update((f"{name}__{k}", v) for k, v in value.get_params(deep=True).items())
        return out

    def set_params(self, **params: Any) -> "ParamsMixin":
        """Set parameters by name (``name__param`` reaches into an estimator-valued parameter); returns self.
        A fitted model keeps its fitted state until it is fitted again. Unknown names are a ConfigError."""
        valid = self._param_names()
        nested: dict[str, dict[str, Any]] = {}
        for key, value in params.items():
            name, sep, sub = key.partition("__")
            if name not in valid:
                raise ConfigError(f"{type(self).__name__} has no parameter {name!r}; valid: {', '.join(valid)}")
            if sep:
                nested.setdefault(name, {})[sub] = value
            else:
                setattr(self, name, value)
        for name, sub in nested.items():
            inner = getattr(self, name)
            if not hasattr(inner, "set_params"):
                raise ConfigError(f"{type(self).__name__}.{name} is {inner!r}, which has no parameters to set "
                                  f"({', '.join(f'{name}__{k}' for k in sub)})")
            inner.set_params(**sub)
        return self


__all__ = ["ParamsMixin"]
