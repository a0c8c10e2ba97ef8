"""`cpo optimize` end to end: `cpo fit` saves a model bundle, `cpo optimize` searches with it."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from cpo_engine.cli import main


@pytest.mark.slow
def test_fit_then_optimize(small_example, tmp_path, capsys):
    common = ["--set", f"embed.cache_dir={tmp_path / 'cache'}", "--set", "embed.device=cpu"]
    pca = ["--set", "pca.prompt_components=15", "--set", "pca.query_components=4"]
    assert main(["fit", str(small_example), "--out", str(tmp_path / "fit"), "--cv", "3", *common, *pca]) == 0
    out = tmp_path / "opt"
    assert main(["optimize", str(small_example), "--model", str(tmp_path / "fit"), "--out", str(out),
                 "--rounds", "1", "--children", "4", "--beam-width", "2", *common]) == 0
    assign = pq.read_table(out / "assignment.parquet")
    assert assign.num_rows == 80 and {"recommended_prompt_id", "source", "verified"} <= set(assign.column_names)
    assert not any(c.startswith("search_") for c in assign.column_names)  # one answer per query
    src = assign.to_pandas()
    assert (src.verified == (src.source == "logged")).all()
    best = json.loads((out / "best_static_prompt.json").read_text())
    assert best["pool_static"]["prompt_id"] and "uplift_vs_best_logged" in best["search_static"]
    cands = pq.read_table(out / "candidates.parquet")
    assert cands.num_rows > 16 and cands.column("lineage")[0].as_py()
    assert "searched" in capsys.readouterr().out


def test_optimize_reports_a_folder_without_a_bundle(tmp_path, capsys):
    (tmp_path / "model").mkdir()
    assert main(["optimize", "--model", str(tmp_path / "model"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "is not a model bundle" in err and "cpo run --out" in err and "Traceback" not in err
