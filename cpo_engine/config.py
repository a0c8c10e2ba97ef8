"""Configuration loader: YAML/JSON files and `section.key=value` overrides -> dataclasses.

Each room owns the dataclass of its concern (``data.config.DataConfig``, ``embedding.config.EmbedConfig``
/``PCAConfig``, ``causal.config.CausalConfig``, ``search.config.SelectionConfig``/``BeamConfig``/
``ProposerConfig``, ``generation.GenerateConfig``); the workflows compose them
(:mod:`cpo_engine.settings`). This module only reads and checks; it imports no room."""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import types
import typing

from pathlib import Path
from typing import Any

from cpo_engine.exceptions import ConfigError


def load_config(cls: type, path: str | os.PathLike[str] | None = None, overrides: list[str] | None = None) -> Any:
    """Build the dataclass ``cls`` from its defaults, a YAML/JSON file (optional) and ``section.key=value``
    overrides, in that order of precedence (defaults < file < overrides; the CLI appends its flags to
    the overrides, so flags win)."""
    raw: dict[str, Any] = _read_file(Path(path)) if path else {}
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{item}' must look like section.key=value (e.g. embed.batch_size=32)")
        _assign(raw, key.strip().split("."), _parse_value(value))
    return from_dict(cls, raw, where=str(path) if path else "config")


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except ValueError as exc:  # json.JSONDecodeError
        raise ConfigError(f"config file {path} is not valid: {exc}") from exc
    except Exception as exc:  # yaml.YAMLError
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(data).__name__}")
    return data


def _parse_value(value: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(value)
    except Exception:
        return value


def _assign(raw: dict[str, Any], keys: list[str], value: Any) -> None:
    for k in keys[:-1]:
        raw = raw.setdefault(k, {})
        if not isinstance(raw, dict):
            raise ConfigError(f"cannot set '{'.'.join(keys)}': '{k}' is not a section")
    raw[keys[-1]] = value


def from_dict(cls: type, raw: dict[str, Any], where: str = "config", base: Any = None) -> Any:
    """Build a dataclass from a mapping, rejecting unknown keys (with a suggestion) and wrong types.

    ``base``: the instance the mapping overrides (keys it leaves out keep ``base``'s values). A
    section's base is the section's own default, so a workflow whose default section differs from
    the section class's defaults keeps them when one key of the section is set.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            raise ConfigError(f"{where}: unknown key '{key}' in {cls.__name__}"
                              + (f" (did you mean '{close[0]}'?)" if close else f"; valid keys: {', '.join(fields)}"))
        sub_base = getattr(base, key) if base is not None else _default(fields[key])
        kwargs[key] = _coerce(hints[key], value, f"{where}.{key}", sub_base)
    return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)


def _default(f: dataclasses.Field) -> Any:
    """A field's default section instance (None when the default is not a dataclass)."""
    value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return value if dataclasses.is_dataclass(value) and not isinstance(value, type) else None


def _coerce(hint: Any, value: Any, where: str, base: Any = None) -> Any:
    if hint is Any:  # a field that also takes objects (an estimator): its class checks what it is given
        return value
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value or {}, where, base)
    # ``A | B`` (``Optional[A]``) tries each; a generic like ``list[str]`` is one type (its args are not alternatives)
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    allowed = typing.get_args(hint) if union else (hint,)
    if value is None and type(None) in allowed:
        return None
    for t in allowed:  # an optional section (``Section | None``): a mapping builds it
        if dataclasses.is_dataclass(t) and isinstance(value, dict):
            return from_dict(t, value, where, base if isinstance(base, t) else None)
    for t in allowed:
        origin = typing.get_origin(t) or t
        if origin is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return value if int in allowed and isinstance(value, int) else float(value)
        if origin in (int, str, bool) and type(value) is origin:
            return value
        if origin is list and isinstance(value, list):
            return value
        if origin is dict and isinstance(value, dict):
            return value
        if origin is list and isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
    raise ConfigError(f"{where} must be {_describe(hint)}, got {value!r}")


def _describe(hint: Any) -> str:
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "").replace("NoneType", "None")


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


__all__ = ["load_config", "from_dict", "to_dict"]
