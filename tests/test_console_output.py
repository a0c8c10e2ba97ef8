"""What a user sees on stderr during a small real `cpo run` (a fresh process, as from a shell, stderr to a file
as in a job log), and the cost ledger its manifest carries: no final bar line printed twice, no log line glued
to a bar, the search bar counts candidates, no third-party "Loading weights" bar, one "embedding cache" line; the search's
embedding throughput (texts/s) and that without an LLM its prompts stay predicted only."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_run(small_example, tmp_path_factory):
    root = tmp_path_factory.mktemp("console")
    env = os.environ | {"OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                        "TOKENIZERS_PARALLELISM": "false"}
    env.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)  # the command itself must keep third-party bars off
    proc = subprocess.run(
        [sys.executable, "-m", "cpo_engine.cli", "run", "--data", str(small_example), "--out", str(root / "run"),
         "--proposer", "edit", "--rounds", "1", "--children", "4", "--z", "0",
         "--set", f"embed.cache_dir={root / 'cache'}",
         "--set", "embed.device=cpu", "--set", "policy.fallback=false"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "run", proc.stderr


@pytest.mark.timeout(420)
def test_bars_and_log_lines_of_a_run_are_each_printed_once(small_run):
    _, err = small_run
    segments = [s.strip() for s in re.split(r"[\r\n]", err) if s.strip()]
    finals = [s for s in segments if "100%|" in s]
    assert finals and len(finals) == len(set(finals)), finals  # each bar's last line once
    assert sum(s.startswith("search: 100%") for s in finals) == 1
    assert "candidates/s" in err and " rounds" not in err  # the search bar counts candidates
    glued = [s for s in segments if "%|" in s and re.search(r"\d{2}:\d{2}:\d{2},\d{3} (INFO|WARNING)", s)]
    assert not glued, glued  # log lines go through the bars, never onto a bar's line
    assert "Loading weights" not in err
    cache_lines = [s for s in segments if re.search(r" INFO .*embedding cache", s)]
    assert len(cache_lines) == 1 and "new vectors written this run" in cache_lines[0], cache_lines


@pytest.mark.timeout(420)
def test_the_run_manifest_has_a_cost_ledger(small_run):
    run, _ = small_run
    cost = json.loads((run / "manifest.json").read_text())["cost"]
    fields = {"llm_calls", "prompt_tokens", "completion_tokens", "embedded_texts", "embedding_seconds", "seconds"}
    assert {"embed_pca", "fit", "search"} <= set(cost["stages"]) and set(cost["total"]) == fields
    for row in [*cost["stages"].values(), cost["total"]]:
        assert set(row) == fields and all(isinstance(v, (int, float)) and v >= 0 for v in row.values()), row
    assert cost["total"]["llm_calls"] == 0  # no LLM in this run
    assert cost["stages"]["embed_pca"]["embedded_texts"] == 80 + 16  # the queries and prompts, a cold cache
    assert cost["stages"]["search"]["embedded_texts"] > 0 and cost["stages"]["fit"]["seconds"] > 0
    assert cost["total"]["embedded_texts"] == sum(r["embedded_texts"] for r in cost["stages"].values())
    assert 0 < cost["stages"]["search"]["embedding_seconds"] <= cost["stages"]["search"]["seconds"]


@pytest.mark.timeout(420)
def test_the_search_says_what_it_cost_and_that_nothing_will_verify_it(small_run):
    run, err = small_run
    search = json.loads((run / "manifest.json").read_text())["cost"]["stages"]["search"]
    line = next(s for s in err.splitlines() if " INFO " in s and "candidate texts embedded" in s)
    assert f"search: {search['embedded_texts']} candidate texts embedded (" in line and " texts/s;" in line
    assert "no LLM is configured to verify them" in line
