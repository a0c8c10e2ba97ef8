"""No folder or file of the repository shadows an installed package (issue: the top-level kernels/ folder hid
the PyPI package `kernels` that transformers imports, whenever Python ran from the repository root).

Python puts the current folder first on sys.path for `python -c`, `python -m` and notebooks, and a script's
own folder for `python path/to/script.py`; pytest puts each test folder there. A regular package (a folder
with __init__.py) or a module found there wins over an installed one of the same name. The repository's
top-level folders are therefore no regular packages (jobs/ runs as `python -m jobs.<name>` as a namespace),
except kernels/, which installs as cpo_engine.kernels and, found as a top-level `kernels`, loads the installed
package of that name in its place; and no module in a folder that lands on sys.path is named like an
installed distribution's top-level package or a standard-library module."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP_LEVEL = ("jobs", "bench", "tests", "scripts", "docs")  # kernels/: see the tests below
#: Folders Python or pytest puts on sys.path when something runs from this repository.
ON_SYS_PATH = (".", "jobs", "bench", "scripts", "tests", "tests/engines", "tests/parity")


def _run_from_root(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=240)


def test_sentence_transformers_imports_from_the_repository_root():
    res = _run_from_root("import sentence_transformers, transformers; print(sentence_transformers.__file__)")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "site-packages" in Path(res.stdout.strip()).resolve().parts  # the installed one (the venv may be in ROOT)


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_no_top_level_folder_is_a_regular_package(name):
    assert not (ROOT / name / "__init__.py").exists(), (
        f"{name}/__init__.py makes {name}/ a regular package that shadows any installed package named "
        f"'{name}' whenever Python runs from the repository root; keep it a plain folder")


def test_import_kernels_from_the_root_gives_the_installed_package():
    try:
        dist = importlib.metadata.distribution("kernels")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("the PyPI package 'kernels' (a dependency of transformers in the lock) is not installed: "
                    "this test needs it to show the repository's kernels/ folder does not shadow it")
    res = _run_from_root("import kernels; print(kernels.__file__)")
    assert res.returncode == 0, res.stderr[-3000:]
    where = Path(res.stdout.strip()).resolve()
    assert not where.is_relative_to(ROOT / "kernels") and where.is_relative_to(Path(dist.locate_file("")).resolve())


def test_without_an_installed_kernels_package_import_kernels_is_an_empty_module():
    """No site-packages (-S): as a plain folder would, `kernels` imports as an empty module, with none of
    cpo_engine's kernels in it (transformers probes for the package this way and must not fail or find ours)."""
    code = ("import sys; sys.path.insert(0, ''); import kernels; "
            "print(sorted(k for k in vars(kernels) if not k.startswith('__'))); "
            # transformers' probe (utils/import_utils.py): no __version__ and no __file__ means "not installed"
            "print(getattr(kernels, '__version__', 'N/A') == 'N/A' and getattr(kernels, '__file__', None) is None)")
    res = subprocess.run([sys.executable, "-S", "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split("\n")[:2] == ["[]", "True"]


def test_cpo_engine_kernels_still_come_from_the_top_level_folder():
    res = _run_from_root("import kernels, cpo_engine.kernels as k; from cpo_engine.kernels import dispatch; "
                         "print(dispatch.__file__); print(k.score_topk is dispatch.score_topk); print(kernels.__file__)")
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.split()
    assert Path(lines[0]).resolve() == ROOT / "kernels" / "dispatch.py" and lines[1] == "True"
    assert not Path(lines[2]).resolve().is_relative_to(ROOT / "kernels")  # both names in one process, each its own


def _installed_top_level_names() -> set[str]:
    names = set(sys.stdlib_module_names)
    for tops in importlib.metadata.packages_distributions():
        names.add(tops)
    return names - {"cpo_engine"}


def test_no_module_on_a_sys_path_folder_is_named_like_an_installed_package():
    installed = _installed_top_level_names()
    clashes = []
    for folder in ON_SYS_PATH:
        for p in (ROOT / folder).iterdir():
            # a plain folder (no __init__.py) is only a namespace portion: an installed package of its name wins;
            # kernels/ steps aside for the installed `kernels` (tests above)
            name = p.stem if p.suffix == ".py" else p.name if (p / "__init__.py").is_file() else None
            if p == ROOT / "kernels":
                continue
            if name and name in installed:
                clashes.append(f"{p.relative_to(ROOT)} shadows the installed or standard module '{name}'")
    assert not clashes, "; ".join(clashes)
