"""`cpo evaluate` as a workflow: a typed result (not a dict) and a manifest naming its kind, on the bundled
example's first 80 mawps queries (the packaged encoder on the CPU)."""

from __future__ import annotations

import json

import pytest


@pytest.mark.timeout(600)
def test_evaluate_returns_a_result_and_writes_a_manifest_of_its_kind(small_example, tmp_path, capsys):
    from cpo_engine.cli import main
    from cpo_engine.workflows.common import read_kind

    out = tmp_path / "eval"
    assert main(["evaluate", "--data", str(small_example), "--out", str(out), "--seeds", "1", "--no-ope", "--cv", "2",
                 "--set", f"embed.cache_dir={tmp_path / 'cache'}", "--set", "embed.device=cpu",
                 "--set", "pca.query_components=4", "--set", "pca.prompt_components=4"]) == 0
    printed = capsys.readouterr().out
    assert "| method |" in printed and str(out / "evaluation.json") in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert read_kind(out) == "evaluate" and manifest["result"] == "evaluation" and manifest["status"] == "ok"
    assert manifest["outputs"] == {"json": "evaluation.json", "table": "evaluation.md", "plot": "evaluation.png"}
    assert manifest["config"]["evaluation"]["seeds"] == 1 and manifest["data"]["rows"] > 0
    assert "paths" not in json.loads((out / "evaluation.json").read_text())
