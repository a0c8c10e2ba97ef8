"""bench/bench_vs_dspy.py's parts: the counting proxy (against a real local HTTP server), the paired
intervals, and the DSPy plain-text adapter's layout (in .venv-dspy; skipped where it is not installed)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
DSPY_PY = ROOT / ".venv-dspy" / "bin" / "python"


def _mod(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


class _Upstream(BaseHTTPRequestHandler):
    """An OpenAI-shaped server: chat completions answer with usage; '/v1/fail/completions' answers 500."""

    def log_message(self, *a) -> None:
        pass

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._send(200, {"data": [{"id": "default"}]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if "fail" in self.path:
            self._send(500, {"error": "boom"})
            return
        self._send(200, {"choices": [{"message": {"content": body["messages"][-1]["content"].upper()}}],
                         "usage": {"prompt_tokens": 3, "completion_tokens": 2}, "max_tokens": body.get("max_tokens")})


@pytest.mark.timeout(60)
def test_counting_proxy_counts_calls_errors_and_tokens_and_forwards_the_token_cap() -> None:
    up = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=up.serve_forever, daemon=True).start()
    try:
        proxy = _mod("counting_proxy").CountingProxy(f"http://127.0.0.1:{up.server_address[1]}/v1")
        with proxy as url:
            def post(path: str, **extra: int) -> tuple[int, dict]:
                req = urllib.request.Request(url + path, data=json.dumps(
                    {"messages": [{"role": "user", "content": "hi"}], **extra}).encode(),
                    headers={"Content-Type": "application/json"}, method="POST")
                try:
                    with urllib.request.urlopen(req, timeout=10) as r:
                        return r.status, json.loads(r.read())
                except urllib.error.HTTPError as e:
                    return e.code, json.loads(e.read())

            assert post("/chat/completions") == (200, {"choices": [{"message": {"content": "HI"}}],
                                                       "usage": {"prompt_tokens": 3, "completion_tokens": 2},
                                                       "max_tokens": None})
            # DSPy 3.4 caps tokens with max_completion_tokens only; llama-cpp-python's server reads max_tokens
            assert post("/chat/completions", max_completion_tokens=16)[1]["max_tokens"] == 16
            assert post("/fail/completions")[0] == 500
            with urllib.request.urlopen(url + "/models", timeout=10) as r:  # forwarded, not a call
                assert json.loads(r.read())["data"][0]["id"] == "default"
            with urllib.request.urlopen(url.removesuffix("/v1") + "/_count", timeout=10) as r:
                counted = json.loads(r.read())
        assert counted == {"calls": 3, "errors": 1, "prompt_tokens": 6, "completion_tokens": 4}
        assert proxy.snapshot() == counted
    finally:
        up.shutdown()
        up.server_close()


def test_paired_intervals_match_a_t_interval_and_cover_the_mean() -> None:
    from scipy import stats

    paired = _mod("bench_vs_dspy").paired
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 2, 80).astype(float), rng.integers(0, 2, 80).astype(float)
    out = paired(list(a), list(b))
    d = a - b
    half = stats.t.ppf(0.975, 79) * d.std(ddof=1) / np.sqrt(80)
    assert out["n"] == 80 and out["diff"] == pytest.approx(d.mean())
    assert out["t_ci"] == pytest.approx([d.mean() - half, d.mean() + half])
    lo, hi = out["bootstrap_ci"]
    assert lo < d.mean() < hi and hi - lo == pytest.approx(2 * half, rel=0.15)
    assert paired([1.0] * 5, [1.0] * 5)["t_ci"] == [0.0, 0.0]


@pytest.mark.timeout(120)
@pytest.mark.skipif(not DSPY_PY.is_file(), reason=".venv-dspy not installed (INSTALL_DSPY=1 scripts/install_engines.sh)")
def test_plain_adapter_sends_the_loops_layout_and_returns_the_raw_completion() -> None:
    """With no demos the adapter's messages are the loop's (prompt, newline, query as one user turn); demos come
    first in the same layout; the completion is the answer as is, graded by the loop's grader."""
    code = r"""
import json, sys
sys.path.insert(0, "bench")
import dspy
from dspy_side import PlainTextAdapter
from cpo_engine.generation.templating import TemplateConfig, render_user
from cpo_engine.generation.graders import get_grader
sig = dspy.Signature("question -> answer").with_instructions("Answer with just the number.")
ad = PlainTextAdapter()
bare = ad.format(sig, [], {"question": "What is 2 + 3?"})
assert bare == [{"role": "user", "content": render_user(TemplateConfig(position="prefix"), "What is 2 + 3?",
                                                       "Answer with just the number.")}], bare
shots = ad.format(sig, [{"question": "What is 1 + 1?", "answer": "2"}, {"question": "no answer"}],
                  {"question": "What is 2 + 3?"})
assert [m["role"] for m in shots] == ["user", "assistant", "user"], shots
assert shots[0]["content"] == "Answer with just the number.\nWhat is 1 + 1?" and shots[1]["content"] == "2"
parsed = ad.parse(sig, "2 + 3 = 5")
assert parsed == {"answer": "2 + 3 = 5"}, parsed
print(json.dumps(get_grader("numeric").grade(parsed["answer"], "5")))
"""
    p = subprocess.run([str(DSPY_PY), "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=110)
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(p.stdout.strip().splitlines()[-1]) == 1.0


def test_summary_reports_what_the_loop_recommends_and_its_calls_when_resumed() -> None:
    """``cpo_loop`` is the loop's ``final`` prompt (a seed here: nothing was promoted), not its top searched one; a
    loop step that resumed a finished folder counts the calls the loop reported, not the proxy's few."""
    bench = _mod("bench_vs_dspy")
    seeds = [{"id": "a", "text": "A", "n": 3}, {"id": "b", "text": "B", "n": 3}]
    loop = {"seeds": seeds, "train_calls": 6, "proxy": {"calls": 0}, "llm_calls_reported": 30,
            "final": {"id": "a", "text": "A", "how": "the seed with the best training mean: nothing was shown better"},
            "top_searched": "A. More.", "best_verified_arm": {"text": "B"}}
    scores = {"a": [1.0, 0.0, 1.0, 1.0], "b": [0.0, 0.0, 1.0, 0.0], "zero_shot": [0.0] * 4,
              "loop_top_searched": [0.0, 0.0, 0.0, 1.0]}
    res = {"steps": {"loop": loop, "seeds": {"prompts": {"a": "A", "b": "B", "zero_shot": "", "loop_top_searched":
                                                         "A. More."}, "query_ids": list("wxyz"), "scores": scores}}}
    bench.summarize(res)
    m = res["methods"]
    assert m["cpo_loop"]["test_mean"] == 0.75 and m["cpo_loop"]["vs_best_seed"]["diff"] == 0.0
    assert m["cpo_loop"]["llm_calls"] == 30 and m["cpo_loop_top_searched"]["test_mean"] == 0.25
    assert m["cpo_loop_best_verified"]["test_mean"] == 0.25  # B, picked on the loop's own queries
    # a final prompt the seeds step did not score comes from the ``final`` step
    loop["final"] = {"id": "s0", "text": "S", "how": "promoted in round 0: measured better than the incumbent"}
    res["steps"]["final"] = {"prompts": {"loop_final": "S"}, "scores": {"loop_final": [1.0, 1.0, 1.0, 1.0]}}
    bench.summarize(res)
    assert res["methods"]["cpo_loop"]["test_mean"] == 1.0 and "promoted" in res["methods"]["cpo_loop"]["what"]
    # the loop at a DSPy step's budget is its own method, with the calls it made
    res["steps"]["matched"] = {"llm_calls_reported": 54, "n_verify": 8, "match": "mipro-plain",
                               "final": {"text": "B", "how": "promoted in round 0"},
                               "prompts": {"matched_top_searched": "A. More.", "matched_best_verified": "B"},
                               "scores": {"matched_final": [0.0, 0.0, 1.0, 0.0],
                                          "matched_top_searched": [0.0, 0.0, 0.0, 1.0],
                                          "matched_best_verified": [0.0, 0.0, 1.0, 0.0]}}
    bench.summarize(res)
    mm = res["methods"]["cpo_loop_matched"]
    assert mm["llm_calls"] == 54 and mm["test_mean"] == 0.25 and mm["vs_best_seed"]["diff"] == -0.5
    assert "mipro-plain's budget (8 verification queries)" in mm["what"]


def test_matched_loop_buys_as_many_verification_queries_as_the_budget_pays_for() -> None:
    """720 calls = 360 on the seeds + 9 arms x 40 queries; 934 calls pay for 63 queries (567 calls), not 64."""
    bench = _mod("bench_vs_dspy")
    assert bench.matched_n_verify(934, 360, 720, 40) == 63
    assert bench.matched_n_verify(720, 360, 720, 40) == 40
    assert bench.matched_n_verify(500, 360, 720, 40) == 40  # never fewer than the loop it is matched against
    with pytest.raises(SystemExit, match="no verification calls"):
        bench.matched_n_verify(900, 360, 360, 40)
