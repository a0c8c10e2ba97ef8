"""Coverage of the loop's predicted-uplift intervals over every verified prompt of recorded `cpo loop` runs.

Each verified prompt of a loop round has a predicted uplift over the incumbent (from the round's causal model)
with a 95% interval and a measured uplift on fresh held-out queries with its own 95% interval. Two coverages
over all verified prompts of the runs given:

- strict: the predicted interval holds the measured uplift (as if the measurement were exact);
- allowing for the measurement's error: ``|pred - meas| <= 1.96 sqrt(se_pred^2 + se_meas^2)``
  (cpo_engine.workflows.verify.calibration), 95% when both intervals are right.

Logged prompts' intervals are the recorded ones (coefficient error only). A searched prompt's interval is
recomputed with the engine's current prompt-level error (cpo_engine.causal.new_prompt_error) from the residuals
the round stored in its model/policy.json; its coefficient error is read back from the recorded interval, which
was ``t_{n-1} sqrt(se^2 + sigma^2)`` with the stored moment ``sigma`` (loops run before commit 5d19390). Runs
given with ``--current`` were made by the current engine: their recorded intervals are taken as they are. No LLM
call: the measured uplifts are the recorded ones.

    .venv/bin/python bench/loop_coverage.py runs/loop_addition_20261207 ... --current runs/loop_mixed_20261207

Writes bench/results/loop_coverage_<date>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
Z95 = 1.959963984540054


def coef_se(arm: dict, npe) -> float | None:
    """The coefficient error behind a searched arm's recorded interval (the plug-in one of the run's date)."""
    from scipy.stats import t

    p = arm["predicted_uplift"]
    half = (p["ci_high"] - p["ci_low"]) / 2
    q = float(t.ppf(0.975, max(npe.n_prompts - 1, 1)))
    s2 = (half / q) ** 2 - npe.sigma ** 2
    return math.sqrt(max(s2, 0.0)) if s2 > -1e-9 else None


def run_rows(folder: Path, recompute: bool = True) -> list[dict]:
    from cpo_engine.causal.new_prompt_error import LABEL, NewPromptError

    report = json.loads((folder / "loop_report.json").read_text())
    rows = []
    for r in report["rounds"]:
        run = Path(r["run"]) if Path(r["run"]).is_absolute() else folder / Path(r["run"]).name
        if not run.is_dir():
            run = folder / f"round-{r['round']}"
        policy = json.loads((run / "model" / "policy.json").read_text())
        npe = NewPromptError.from_dict(policy.get("evidence", {}).get("new_prompt_error"))
        for a in r["verification"]["arms"]:
            p, m = a.get("predicted_uplift"), a.get("uplift_vs_baseline")
            if not p or not m or p.get("ci_low") is None or m.get("ci_low") is None:
                continue
            row = {"task": report["task"].get("name", report["task"].get("kind")), "round": r["round"],
                   "id": a["id"], "role": a["role"], "text": a["text"], "measured": m["value"],
                   "measured_ci": [m["ci_low"], m["ci_high"]], "predicted": p["value"],
                   "recorded_ci": [p["ci_low"], p["ci_high"]], "recorded_method": p.get("method")}
            lo, hi = p["ci_low"], p["ci_high"]
            if recompute and a["role"] == "searched" and npe is not None and p.get("method") == LABEL:
                se = coef_se(a, npe)
                if se is None:
                    row["note"] = "recorded interval not the plug-in one (clipped?): kept"
                else:
                    lo, hi = (float(v) for v in npe.interval(p["value"], se))
                    row["se_coef"] = se
            se_pred = (hi - lo) / (2 * Z95)
            se_meas = (m["ci_high"] - m["ci_low"]) / (2 * Z95)
            row.update(ci=[lo, hi], covered=bool(lo <= m["value"] <= hi),
                       covered_allowing_measurement=bool(abs(p["value"] - m["value"]) <= Z95 * math.hypot(se_pred, se_meas)))
            rows.append(row)
    return rows


def share(rows: list[dict], key: str) -> dict:
    c = [r[key] for r in rows]
    m = float(np.mean(c)) if c else float("nan")
    return {"covered": int(sum(c)), "n": len(c), "coverage": m, "mc_se": float(np.sqrt(m * (1 - m) / len(c))) if c else None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="*", help="loop output folders (loop_report.json, round-*/model/policy.json) made "
                                            "with the plug-in interval: searched prompts' intervals recomputed")
    ap.add_argument("--current", action="append", default=[], help="a loop folder made by the current engine: "
                                                                    "its recorded intervals as they are (repeatable)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    rows = [r for f in a.runs for r in run_rows(Path(f))] + [r for f in a.current for r in run_rows(Path(f), False)]
    searched = [r for r in rows if r["role"] == "searched"]
    result = {"bench": "loop_coverage", "command": " ".join([sys.executable, *sys.argv]),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "load_average": os.getloadavg(), "runs": a.runs, "runs_current": a.current, "level": 0.95,
              "all": {"strict": share(rows, "covered"), "allowing_measurement": share(rows, "covered_allowing_measurement")},
              "searched": {"strict": share(searched, "covered"),
                           "allowing_measurement": share(searched, "covered_allowing_measurement")},
              "per_task": {t: {"strict": share([r for r in rows if r["task"] == t], "covered"),
                               "allowing_measurement": share([r for r in rows if r["task"] == t],
                                                             "covered_allowing_measurement")}
                           for t in dict.fromkeys(r["task"] for r in rows)},
              "rows": rows,
              "notes": ["searched prompts: interval recomputed with the current prompt-level error from the stored "
                        "leave-one-prompt-out residuals; logged prompts: the recorded interval",
                        "measured uplifts are the recorded ones (no LLM call)"]}
    out = Path(a.out or ROOT / "bench" / "results" / f"loop_coverage_{datetime.date.today():%Y%m%d}.json")
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("all", "searched")}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
