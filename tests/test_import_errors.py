"""Honest import errors: "not installed" only when the package is absent; "installed but failed to import",
with the underlying error and file, when it is there (the old message sent users who had sentence-transformers
installed to install it again, when a folder of the repository shadowed one of its dependencies)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cpo_engine.exceptions import MissingExtraError
from cpo_engine.utils import install_hint, require


def test_a_missing_package_is_called_not_installed_with_the_extra_to_install():
    with pytest.raises(MissingExtraError) as exc:
        require("cpo_engine_no_such_module_xyz", extra="lightgbm")
    msg = str(exc.value)
    assert "is not installed" in msg and "pip install 'cpo-engine[lightgbm]'" in msg
    assert "failed to import" not in msg


def test_a_broken_installed_package_is_called_installed_with_its_error_and_file(tmp_path, monkeypatch):
    pkg = tmp_path / "cpo_broken_pkg_xyz"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from cpo_engine import no_such_name_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingExtraError) as exc:
        require("cpo_broken_pkg_xyz")
    msg = str(exc.value)
    assert "is installed" in msg and "failed to import" in msg and "not installed" not in msg
    assert str(pkg / "__init__.py") in msg and "no_such_name_xyz" in msg


def test_a_folder_in_the_current_directory_that_shadows_a_dependency_is_named(tmp_path):
    """The original failure, reproduced: a regular package in the working directory (there, `kernels/`; here
    `transformers/`, which sentence-transformers imports whatever its version) hides an installed dependency."""
    (tmp_path / "transformers").mkdir()
    (tmp_path / "transformers" / "__init__.py").write_text("# not the PyPI package\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    code = ("from cpo_engine.utils import require\n"
            "try:\n    require('sentence_transformers')\nexcept ImportError as e:\n    print('ERR', e)\n"
            "else:\n    print('OK')\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    assert out.startswith("ERR"), out
    assert "is installed" in out and "failed to import" in out and "not installed" not in out
    assert str(tmp_path / "transformers") in out and "shadows" in out


def test_install_hints_name_only_extras_that_exist():
    assert "cpo-engine[vllm]" in install_hint("vllm")
    assert "dependency of cpo-engine" in install_hint(None)
    with pytest.raises(ValueError):
        install_hint("embed")
