"""bench/loop_coverage.py: coverage over the prompts recorded loops verified, searched prompts' intervals
recomputed with the engine's current prompt-level error from the round's stored residuals (no LLM call)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import t

from cpo_engine.causal.new_prompt_error import LABEL, from_residuals

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("loop_coverage", ROOT / "bench" / "loop_coverage.py")
loop_coverage = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(loop_coverage)


def _loop_folder(tmp_path: Path, residual_scale: float) -> tuple[Path, object]:
    rng = np.random.default_rng(3)
    res = [{"prompt_id": f"s{i}", "residual": float(r), "se_pred": 0.05, "se_meas": 0.09}
           for i, r in enumerate(rng.normal(scale=residual_scale, size=6))]
    npe = from_residuals(res)
    (tmp_path / "round-0" / "model").mkdir(parents=True)
    (tmp_path / "round-0" / "model" / "policy.json").write_text(json.dumps({"evidence": {"new_prompt_error": npe.to_dict()}}))
    se, pred = 0.012, -0.03
    half = float(t.ppf(0.975, 5)) * np.hypot(se, npe.sigma)  # the interval a loop of 2026-12-07 recorded

    def arm(i, role, p_lo, p_hi, p_val, method, meas, m_lo, m_hi):
        return {"id": f"a{i}", "role": role, "text": f"prompt {i}",
                "predicted_uplift": {"value": p_val, "ci_low": p_lo, "ci_high": p_hi, "method": method},
                "uplift_vs_baseline": {"value": meas, "ci_low": m_lo, "ci_high": m_hi}}

    arms = [{"id": "inc", "role": "incumbent", "text": "seed", "predicted_uplift": None, "uplift_vs_baseline": None},
            arm(1, "logged", -0.2, 0.0, -0.1, "causal model", -0.05, -0.1, 0.0),
            arm(2, "logged", -0.2, 0.0, -0.1, "causal model", 0.08, 0.03, 0.13),
            arm(3, "searched", pred - half, pred + half, pred, LABEL, 0.06, 0.0, 0.12)]
    report = {"task": {"name": "toy"}, "rounds": [{"round": 0, "run": str(tmp_path / "round-0"),
                                                   "verification": {"arms": arms}}]}
    (tmp_path / "loop_report.json").write_text(json.dumps(report))
    return tmp_path, npe


@pytest.mark.parametrize("scale", [0.02, 0.3])
def test_searched_interval_is_recomputed_and_coverage_counted(tmp_path, scale):
    folder, npe = _loop_folder(tmp_path, scale)
    rows = loop_coverage.run_rows(folder)
    assert [r["role"] for r in rows] == ["logged", "logged", "searched"]
    s = rows[2]
    assert s["se_coef"] == pytest.approx(0.012, rel=1e-6)  # read back from the recorded plug-in interval
    lo, hi = npe.interval(-0.03, 0.012)
    assert s["ci"] == pytest.approx([float(lo), float(hi)])
    assert s["covered"] == bool(lo <= 0.06 <= hi)
    assert rows[0]["covered"] and not rows[1]["covered"]  # logged: the recorded interval [-0.2, 0.0]
    # allowing for the measurement: |pred - meas| = 0.18 > 1.96 sqrt(0.051^2 + 0.0255^2) = 0.112
    assert not rows[1]["covered_allowing_measurement"]
    out = tmp_path / "out.json"
    loop_coverage.main([str(folder), "--out", str(out)])
    d = json.loads(out.read_text())
    assert d["all"]["strict"]["n"] == 3 and d["all"]["strict"]["covered"] == sum(r["covered"] for r in rows)
    assert d["searched"]["strict"]["n"] == 1
