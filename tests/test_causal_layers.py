"""Layering of the causal room: the registry is light, and ``distributed`` sits below ``causal``."""

from __future__ import annotations

import subprocess
import sys


def _loaded_after(statement: str, modules: tuple[str, ...]) -> list[str]:
    code = f"import sys; {statement}; print(','.join(m for m in {modules!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return [m for m in out.strip().split(",") if m]


def test_importing_the_registry_imports_no_estimator():
    loaded = _loaded_after("import cpo_engine.causal.nuisances as n; n.nuisance_names()",
                           ("torch", "sklearn", "cpo_engine.causal.nuisances.ridge"))
    assert loaded == []


def test_distributed_crossfit_does_not_import_causal():
    loaded = _loaded_after("import cpo_engine.distributed.crossfit", ("cpo_engine.causal", "ray"))
    assert loaded == []
