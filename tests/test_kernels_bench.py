"""bench/bench_search.py runs end to end on a tiny shape and writes its JSON record."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path


def test_bench_search_smoke(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("bench_search", Path(__file__).resolve().parents[1] / "bench" /
                                                  "bench_search.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--n-queries", "300", "--n-candidates", "400", "--repeats", "1", "--loop-queries", "10",
                     "--quality-queries", "30", "--device", "cpu", "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("bench_search_cpu_*.json")
    rec = json.loads(path.read_text())
    assert {"config", "device", "versions", "results"} <= set(rec)
    res = rec["results"]
    assert res["quality"] and all(q["recall_at_k"] == 1.0 for q in res["quality"].values())
    assert res["auto_backend"] in res["quality"]  # every backend timed has its quality beside it
    assert res["ratios"]["fused_vs_matmul"] > 0 and res["ratios"]["fused_vs_python_loop"] > 0
    assert res["ratios"]["fused_vs_matmul_cpu_time"] > 0
