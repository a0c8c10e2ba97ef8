"""Search that pays for itself (issue 23, point 6): with no LLM configured to verify, `cpo run` skips the
generative search by default (its prompts would stay predictions, and embedding them was most of a run's time)
and says so in one line; `--proposer edit` searches anyway. Too few training queries for a per-query policy is
said before the embedding, not only in the report."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from cpo_engine.cli import main

pytestmark = [pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    from cpo_engine.edits.simulate import simulate_grid

    path = tmp_path_factory.mktemp("grid") / "grid.parquet"
    pq.write_table(simulate_grid({"math": {"step_by_step": 0.15, "persona": 0.0, "meta_instruction": -0.12}},
                                 n_queries=30, seed=0), path)
    return path


def _run(grid, out, *extra):
    return main(["run", "--data", str(grid), "--out", str(out), "--cv", "2", *extra, "--set", "embed.device=cpu",
                 "--set", f"embed.cache_dir={out.parent / 'cache'}", "--set", "pca.query_components=4"])


def test_without_an_llm_the_search_is_skipped_and_said_and_an_explicit_proposer_searches(grid, tmp_path, capsys):
    out = tmp_path / "default"
    assert _run(grid, out) == 0
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if "search: skipped" in line]
    assert len(said) == 1 and "--proposer edit" in said[0], err[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["proposer"]["kind"] == "none"  # the manifest records what ran, not 'auto'
    assert "search" not in manifest["timings_s"] and not (out / "search" / "candidates.parquet").exists()
    # the small-data verdict comes before the embedding (the line precedes the embed stage's lines)
    small = err.index("data too small for a per-query policy")
    assert small < err.index("stage embed_pca done")

    searched = tmp_path / "searched"
    assert _run(grid, searched, "--proposer", "edit", "--rounds", "1", "--children", "4") == 0
    assert "search: skipped" not in capsys.readouterr().err
    manifest = json.loads((searched / "manifest.json").read_text())
    assert manifest["config"]["proposer"]["kind"] == "edit" and "search" in manifest["timings_s"]
    assert pq.read_table(searched / "search" / "candidates.parquet").num_rows > 0


def test_auto_searches_when_an_llm_can_verify():
    from cpo_engine.config import load_config
    from cpo_engine.settings import RunConfig
    from cpo_engine.workflows.run import resolve_proposer

    plain = load_config(RunConfig, None, ["proposer.task=math"])  # one key of the section keeps kind 'auto'
    assert plain.proposer.kind == "auto" and resolve_proposer(plain).proposer.kind == "none"
    llm = load_config(RunConfig, None, ["generation.backend.openai.base_url=http://h/v1"])
    assert resolve_proposer(llm).proposer.kind == "edit"
    off = load_config(RunConfig, None, ["generation.backend.openai.base_url=http://h/v1", "verify.enabled=false"])
    assert resolve_proposer(off).proposer.kind == "none"
    asked = load_config(RunConfig, None, ["proposer.kind=ablate"])
    assert resolve_proposer(asked) is asked  # a kind the user named is kept
