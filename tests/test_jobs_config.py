"""The Ray Jobs runtime environments are valid for Ray (checked by Ray's own RuntimeEnv, no cluster),
and the GPU image pins Ray to one version in one place."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["runtime_env.yaml", "runtime_env_pip.yaml", "runtime_env_container.yaml"])
def test_runtime_envs_are_valid(name):
    RuntimeEnv = pytest.importorskip("ray.runtime_env").RuntimeEnv
    env = RuntimeEnv(**yaml.safe_load((ROOT / "jobs" / name).read_text()))
    assert env["env_vars"]["HF_HUB_OFFLINE"] == "1"
    if "pip" in env:  # the cluster's Ray must be the job's Ray: never install a second one
        assert not any(re.match(r"ray\b", p) for p in env["pip"]["packages"])


def test_gpu_image_is_built_on_a_pinned_ray_base_image():
    text = (ROOT / "Dockerfile.gpu").read_text()
    version = re.search(r"^ARG RAY_VERSION=(\d+\.\d+\.\d+)$", text, re.M)
    assert version, "Dockerfile.gpu must pin ARG RAY_VERSION=X.Y.Z"
    assert re.search(r"^FROM rayproject/ray:\$\{RAY_VERSION\}", text, re.M)
    assert text.count("ray[data,default]==${RAY_VERSION}") == 1  # the pin pip installs against
