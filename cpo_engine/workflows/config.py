"""The workflows' configurations live in :mod:`cpo_engine.settings` (a room below workflows and commands, so a
command imports no class a workflow module defines); this module re-exports them for existing imports."""

from __future__ import annotations

from typing import Any

from cpo_engine import settings as _settings
from cpo_engine.settings import __all__  # noqa: F401


def __getattr__(name: str) -> Any:
    """Every name of :mod:`cpo_engine.settings` (``from cpo_engine.workflows.config import RunConfig``)."""
    try:
        return getattr(_settings, name)
    except AttributeError:
        raise AttributeError(f"module '{__name__}' has no attribute '{name}'") from None
