"""Save and load causal reward models without pickle: ``model.json`` + ``model.safetensors``.

The JSON holds the estimator's settings, the featurizer spec, diagnostics and provenance (embedder id
and prefix, PCA state hashes, data hash, package versions); the safetensors file holds the arrays
(final-stage coefficients and covariance, reference prompt, torch nuisance weights, and optionally
the residuals for :meth:`refit_final`). Loading refuses a model built with another embedder or PCA.

One hash covers both files (``content_sha256``: the JSON without that field, canonically dumped, then
the arrays), so an edit to either (``d_t``, ``final_alpha``, a coefficient) is refused at load, and so
is a truncated or invalid file: each ends in a :class:`DataError` naming the file and the fix.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from cpo_engine.exceptions import ConfigError, DataError

log = logging.getLogger(__name__)

FORMAT = "cpo-causal-model/2"
LEGACY_FORMATS = ("cpo-causal-model/1",)  # before model.json was hashed: its arrays alone are checked
_REFIT = "rewrite it with `cpo fit` (or `cpo run`), or restore the saved folder from a copy"
CHECKED_KEYS = ("embedder", "query_pca", "prompt_pca")
_INIT = ("featurizer", "cv", "final_alpha", "cov_type", "overlap_threshold", "min_groups_per_fold",
         "backend", "device", "random_state", "stats_crossfit")


def _spec(model: Any) -> Any:
    return model if isinstance(model, str) else type(model).__name__


def _nuisance_arrays(prefix: str, models: list) -> tuple[dict, list | None]:
    """Arrays and JSON specs of the fold nuisances, each saved by its own class through the registry;
    (.., None) when a fold model is a third-party estimator (its state is not saved)."""
    arrays, specs = {}, []
    for k, m in enumerate(models):
        name = _persisted_name(m)
        if name is None:
            return {}, None
        arrays.update({f"{prefix}.{k}.{key}": a for key, a in m.state_arrays().items()})
        specs.append({"kind": name} | m.meta())
    return arrays, specs


_STATE_METHODS = ("state_arrays", "meta", "from_state")


def _persisted_name(model: Any) -> str | None:
    """Registered name of a nuisance this package implements; None for a third-party estimator.

    A class of :mod:`cpo_engine.causal.nuisances` must be registered and own its persistence, so a
    new torch nuisance is never left out of a saved model without anyone noticing.
    """
    from cpo_engine.causal.nuisances import is_own_nuisance, registered_name

    if not is_own_nuisance(model):
        return None
    cls, name = type(model), registered_name(model)
    if name is None:
        raise ConfigError(f"{cls.__module__}.{cls.__qualname__} is not in the nuisance registry: add it to "
                          "_REGISTRY in cpo_engine/causal/nuisances/__init__.py so saved models can load it")
    missing = [a for a in _STATE_METHODS if not callable(getattr(cls, a, None))]
    if missing:
        raise ConfigError(f"nuisance '{name}' ({cls.__qualname__}) cannot be saved: it lacks {', '.join(missing)}; "
                          "implement state_arrays() -> dict of arrays, meta() -> JSON-safe dict and the "
                          "classmethod from_state(meta, arrays) (see TorchRidge)")
    return name


def save_model(model: Any, path: Any, provenance: dict, *, keep_residuals: bool = False) -> Path:
    """Write a fitted :class:`CausalRewardModel` into directory ``path``; returns the directory."""
    from safetensors.numpy import save

    from cpo_engine.utils import atomic_write_bytes, atomic_write_text, json_default_str, versions

    model._check_fitted()
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    arrays = {"coef": model.coef_, "cov": model.cov_, "t_ref": model.t_ref_,
              "inference_coef": model._inference_coef()}
    for name, (coef, cov) in (getattr(model, "split_", None) or {}).items():  # honest-selection halves
        arrays.update({f"split.{name}.coef": coef, f"split.{name}.cov": cov})
    ny, spec_y = _nuisance_arrays("nuisance_y", model.models_y_)
    nt, spec_t = _nuisance_arrays("nuisance_t", model.models_t_)
    if spec_y is not None and spec_t is not None:
        arrays.update(ny | nt)
    if keep_residuals:
        arrays.update(_residual_arrays(model))
    for name in ("prompts_T", "phi_mean"):  # what summary()'s per-prompt effects need (None: not recorded)
        if getattr(model, f"{name}_", None) is not None:
            arrays[name] = getattr(model, f"{name}_")
    arrays = {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in arrays.items()}
    blob = save(arrays)
    meta = {
        "format": FORMAT,
        "params": {k: getattr(model, k) for k in _INIT if _jsonable(getattr(model, k))}
        | {"model_y": _spec(model.model_y), "model_t": _spec(model.model_t)},
        "featurizer": model.featurizer_.to_dict(),
        "final_alpha": model.final_alpha_, "cov_type": model.cov_type_,
        "n_features_in": model.n_features_in_, "d_t": model.d_t_,
        "nuisances": None if spec_y is None or spec_t is None else {"y": spec_y, "t": spec_t},
        "has_residuals": keep_residuals,
        "prompt_ids": None if getattr(model, "prompt_ids_", None) is None else [str(p) for p in model.prompt_ids_],
        "diagnostics": model.diagnostics_.to_dict(),
        "provenance": provenance | {"versions": versions(), "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        "arrays_sha256": _sha(blob),
    }
    meta = json.loads(json.dumps(meta, default=json_default_str))  # exactly what a reader will parse
    meta["content_sha256"] = _content_sha(meta, blob)
    atomic_write_bytes(out / "model.safetensors", blob)
    atomic_write_text(out / "model.json", json.dumps(meta, indent=2))
    return out


def _content_sha(meta: dict, blob: bytes) -> str:
    """sha256 of model.json's content (without this hash) and of the arrays."""
    import hashlib

    body = {k: v for k, v in meta.items() if k != "content_sha256"}
    h = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    h.update(blob)
    return h.hexdigest()


def _residual_arrays(model: Any) -> dict:
    codes = np.unique(model._groups, return_inverse=True)[1] if model._groups is not None \
        else np.arange(len(model._Y))
    fold = np.empty(len(model._Y))
    for k, (_, test) in enumerate(model.folds_):
        fold[test] = k
    return {"res.y": model.y_res_, "res.t": model.t_res_, "res.X": model._X, "res.Y": model._Y,
            "res.T": model._T, "res.w": model._w, "res.groups": codes, "res.fold": fold}


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v)
        return True
    except TypeError:
        return False


def _sha(blob: bytes) -> str:
    import hashlib

    return hashlib.sha256(blob).hexdigest()


def check_provenance(saved: dict, expect: dict | None, path: Any) -> None:
    """Raise ConfigError when the embedder or a PCA recorded at save time differs from ``expect``
    (the embedder compared on the fields both record: a model saved before encoder identities were
    recorded is compared by name and prefixes)."""
    for key in CHECKED_KEYS:
        if not expect or key not in expect or key not in saved:
            continue
        mine, theirs = saved[key], expect[key]
        if key == "embedder" and isinstance(mine, dict) and isinstance(theirs, dict):
            shared = [k for k in mine if k in theirs and mine[k] is not None and theirs[k] is not None]
            mine, theirs = {k: mine[k] for k in shared}, {k: theirs[k] for k in shared}
        if mine != theirs:
            raise ConfigError(
                f"model at {path} was fitted with {key}={saved[key]!r} but the current "
                f"representations use {expect[key]!r}: effects are in another coordinate system. "
                "Rebuild representations with the model's embedder/PCA or refit the model."
            )


def load_saved(path: Any, expect: dict | None, cls: Any) -> Any:
    """Load a model saved by :func:`save_model` as an instance of ``cls`` (the model class, which calls this
    from its ``load``: this module never imports it), checking provenance against ``expect``."""
    from safetensors.numpy import load

    p = Path(path)
    meta, blob = _read(p)
    check_provenance(meta.get("provenance", {}), expect, p)
    try:
        return _build(meta, load(blob), cls)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        # Only a file written by another version (or hand-edited legacy one) gets here: the hash matched.
        raise DataError(f"the saved model cannot be rebuilt ({type(exc).__name__}: {exc})",
                        source=str(p / "model.json"), fix=_REFIT) from exc


def _build(meta: dict, arrays: dict, cls: Any) -> Any:
    from cpo_engine.causal.featurize import Featurizer

    m = cls(**meta["params"])
    m.featurizer_ = Featurizer.from_dict(meta["featurizer"])
    m.coef_, m.cov_, m.t_ref_ = arrays["coef"], arrays["cov"], arrays["t_ref"]
    m.inference_coef_ = arrays.get("inference_coef", m.coef_)  # older saves: coef_ was the OLS/penalized fit
    m.split_ = {name: (arrays[f"split.{name}.coef"], arrays[f"split.{name}.cov"]) for name in ("select", "estimate")} \
        if "split.select.coef" in arrays else None
    m.final_alpha_, m.cov_type_ = meta["final_alpha"], meta["cov_type"]
    m.n_features_in_, m.d_t_ = meta["n_features_in"], meta["d_t"]
    m.device_ = "cpu"
    m.provenance_ = meta.get("provenance", {})
    m.prompts_T_, m.phi_mean_, m.prompt_ids_ = arrays.get("prompts_T"), arrays.get("phi_mean"), meta.get("prompt_ids")
    m.diagnostics_ = _diagnostics(meta["diagnostics"])
    nuis = meta.get("nuisances")
    m.models_y_ = _load_nuisances("nuisance_y", nuis["y"], arrays) if nuis else []
    m.models_t_ = _load_nuisances("nuisance_t", nuis["t"], arrays) if nuis else []
    if meta.get("has_residuals"):
        _restore_residuals(m, arrays)
    return m


def _read(p: Path) -> tuple[dict, bytes]:
    try:
        text = (p / "model.json").read_text(encoding="utf-8")
        blob = (p / "model.safetensors").read_bytes()
    except FileNotFoundError as exc:
        raise DataError(f"{p} is not a saved causal model: {exc.filename} is missing",
                        fix="pass the folder `cpo fit --out OUT` wrote (OUT/model) or a `cpo run` folder") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"model.json is not text ({exc})", source=str(p / "model.json"), fix=_REFIT) from exc
    try:
        meta = json.loads(text)
    except ValueError as exc:
        raise DataError(f"model.json is not valid JSON (truncated or edited: {exc})", source=str(p / "model.json"),
                        fix=_REFIT) from exc
    if not isinstance(meta, dict) or meta.get("format") not in (FORMAT, *LEGACY_FORMATS):
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise DataError(f"has format {found!r}, expected {FORMAT!r}", source=str(p / "model.json"), fix=_REFIT)
    if meta.get("arrays_sha256") != _sha(blob):
        raise DataError("model.safetensors does not match the hash in model.json: the files are from different "
                        "saves, truncated or edited", source=str(p / "model.safetensors"), fix=_REFIT)
    if meta["format"] in LEGACY_FORMATS:
        log.warning("%s was saved by an older cpo_engine (%s): only its arrays are checked for changes; refit to "
                    "protect model.json too", p, meta["format"])
    elif meta.get("content_sha256") != _content_sha(meta, blob):
        raise DataError("model.json does not match its hash (content_sha256): it was edited or corrupted after it "
                        "was saved", source=str(p / "model.json"), fix=_REFIT)
    return meta, blob


def _diagnostics(d: dict) -> Any:
    from cpo_engine.causal.diagnostics import FitDiagnostics

    d = dict(d)
    if isinstance(d.get("gram_condition"), str):
        d["gram_condition"] = float(d["gram_condition"])
    return FitDiagnostics(**d)


def _load_nuisances(prefix: str, specs: list, arrays: dict) -> list:
    """Fold nuisances rebuilt by their registered classes from their specs and arrays."""
    from cpo_engine.causal.nuisances import resolve

    out = []
    for k, spec in enumerate(specs):
        cls = resolve(spec["kind"])
        if not callable(getattr(cls, "from_state", None)):
            raise DataError(f"saved nuisance '{spec['kind']}' cannot be loaded: its registered factory has no "
                            "from_state; load the model with the cpo-engine version that saved it")
        head = f"{prefix}.{k}."
        own = {name[len(head):]: a for name, a in arrays.items() if name.startswith(head)}
        meta = {key: v for key, v in spec.items() if key != "kind"}
        out.append(cls.from_state(meta, own))
    return out


def _restore_residuals(m: Any, a: dict) -> None:
    m.y_res_, m.t_res_ = a["res.y"], a["res.t"]
    m._X, m._Y, m._T, m._w = a["res.X"], a["res.Y"], a["res.T"], a["res.w"]
    m._groups = a["res.groups"].astype(np.int64)
    fold, idx = a["res.fold"].astype(np.int64), np.arange(len(m._Y))
    m.folds_ = [(idx[fold != k], idx[fold == k]) for k in range(int(fold.max()) + 1)]


def pca_fingerprint(pca: Any) -> dict:
    """Identity of a fitted PCA: component count and a hash of its mean and components."""
    import hashlib

    h = hashlib.sha256()
    for a in (pca.mean_, pca.components_):
        h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
    return {"n_components": int(pca.components_.shape[0]), "sha256": h.hexdigest()}


def representation_provenance(reps: Any) -> dict:
    """The provenance a model must match to be used with ``reps`` (embedder and both PCAs)."""
    prov = getattr(reps, "provenance", {}) or {}
    return {
        "embedder": {"id": prov.get("encoder"), "identity": prov.get("encoder_identity"),
                     "query_prefix": prov.get("query_prefix"), "prompt_prefix": prov.get("prompt_prefix")},
        "query_pca": pca_fingerprint(reps.query_pca),
        "prompt_pca": pca_fingerprint(reps.prompt_pca),
    }
