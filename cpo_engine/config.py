"""Configuration: one small dataclass per concern, loaded from YAML/JSON with `section.key=value`
overrides. Every CLI subcommand and Ray job entrypoint builds the same objects."""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cpo_engine.exceptions import ConfigError
from cpo_engine.search.config import SearchStageConfig


@dataclass
class DataConfig:
    """Where triplets come from."""

    path: str | None = None
    """Triplet table (Parquet file or folder, CSV, JSONL); None runs the bundled example."""
    tasks: list[str] | None = None
    """Keep only these values of the `task` column (None keeps all)."""


@dataclass
class EmbedConfig:
    """How texts become vectors."""

    encoder: str = "minilm"
    """'minilm' (the packaged all-MiniLM-L6-v2) or a local sentence-transformers folder."""
    device: str = "auto"
    """'auto' (CUDA when present), 'cpu' or 'cuda[:N]'."""
    batch_size: int = 64
    """Texts per forward pass."""
    num_threads: int | None = None
    """torch CPU threads (None: torch's default)."""
    cache_dir: str | None = ".cpo_cache/embeddings"
    """Content-addressed embedding cache; None disables caching."""
    query_prefix: str | None = None
    """Text prepended to queries; None uses the model's known prefix (e.g. nomic 'search_query: ')."""
    prompt_prefix: str | None = None
    """Text prepended to prompts; None uses the model's known prefix."""


@dataclass
class PCAConfig:
    """Dimensionality reduction, fitted separately for queries (X) and prompts (T)."""

    query_components: int | float = 16
    """int: components for X; float in (0, 1): explained-variance target."""
    prompt_components: int | float = 32
    """int: components for T, capped at n_prompts - 1 (so a small prompt set is represented
    exactly: with fewer components a linear effect model cannot tell its prompts apart); float:
    explained-variance target."""


@dataclass
class RunConfig:
    """The end-to-end job (`cpo run`)."""

    data: DataConfig = field(default_factory=DataConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    pca: PCAConfig = field(default_factory=PCAConfig)
    search: SearchStageConfig = field(default_factory=SearchStageConfig)
    out: str | None = None
    """Run folder; None makes runs/<timestamp>."""
    seed: int = 0
    """Seed for every random step (splits, folds, proposers)."""


def load_config(path: str | os.PathLike[str] | None = None, overrides: list[str] | None = None,
                cls: type = RunConfig) -> Any:
    """Build `cls` from a YAML/JSON file (optional) and `section.key=value` overrides."""
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


def from_dict(cls: type, raw: dict[str, Any], where: str = "config") -> Any:
    """Build a dataclass from a mapping, rejecting unknown keys (with a suggestion) and wrong types."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            raise ConfigError(f"{where}: unknown key '{key}' in {cls.__name__}"
                              + (f" (did you mean '{close[0]}'?)" if close else f"; valid keys: {', '.join(names)}"))
        kwargs[key] = _coerce(hints[key], value, f"{where}.{key}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value or {}, where)
    args = typing.get_args(hint)
    allowed = args if args else (hint,)
    if value is None and type(None) in allowed:
        return None
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


__all__ = ["DataConfig", "EmbedConfig", "PCAConfig", "RunConfig", "load_config", "from_dict", "to_dict"]
