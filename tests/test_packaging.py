"""Package hygiene: pyproject installs every package under cpo_engine (kernels/ as cpo_engine.kernels),
nothing as a top-level `kernels` or `jobs`, and a plain MIT license string."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_lists_every_package_and_maps_kernels():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    st = cfg["tool"]["setuptools"]
    listed = set(st["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "cpo_engine").rglob("__init__.py")
             if "__pycache__" not in p.parts}
    found.add("cpo_engine.kernels")
    assert listed == found, f"pyproject [tool.setuptools] packages differs: missing {found - listed}, extra {listed - found}"
    assert st["package-dir"] == {"cpo_engine.kernels": "kernels"}
    assert not any(p.split(".")[0] in ("kernels", "jobs") for p in listed)
    assert cfg["project"]["license"] == "MIT"


def test_kernels_import_as_part_of_cpo_engine():
    from cpo_engine import kernels

    assert Path(kernels.__file__).resolve().parent == ROOT / "kernels"
    assert hasattr(kernels, "score_topk") and hasattr(kernels, "score_dense")
