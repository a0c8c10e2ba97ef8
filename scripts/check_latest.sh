#!/usr/bin/env bash
# Know when the world moves: resolve the newest versions pyproject.toml's ranges allow (scripts/lock.sh with
# UPGRADE=1, into a scratch folder), install them in a scratch venv, run the test suite from the repository root
# with it, and print which packages moved against requirements/dev.lock and which tests failed. The record goes
# to bench/results/check_latest_<date>.json. Exit status: the suite's (0 = the newest versions pass).
# Fix or bound (with the reason beside the bound in pyproject.toml) what they break, then scripts/lock.sh.
# Usage: scripts/check_latest.sh [PYTEST ARGS]     (SCRATCH=/tmp/cpo-check-latest by default)
set -euo pipefail
cd "$(dirname "$0")/.."
SCRATCH="${SCRATCH:-/tmp/cpo-check-latest}"
rm -rf "$SCRATCH" && mkdir -p "$SCRATCH"
python3 -m venv "$SCRATCH/venv"
"$SCRATCH/venv/bin/python" -m pip install -q -r requirements/tools.txt
UV="$SCRATCH/venv/bin/uv" UPGRADE=1 LOCK_DIR="$SCRATCH/locks" bash scripts/lock.sh
src=(--find-links /opt/wheels); ls /opt/wheels/torch-*+cpu-*.whl >/dev/null 2>&1 \
  || src=(--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
"$SCRATCH/venv/bin/uv" pip install -q --python "$SCRATCH/venv/bin/python" "${src[@]}" -r "$SCRATCH/locks/dev.lock"
"$SCRATCH/venv/bin/uv" pip install -q --python "$SCRATCH/venv/bin/python" --no-deps -e .
bash scripts/compile_venv.sh "$SCRATCH/venv"
export OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
set +e
"$SCRATCH/venv/bin/python" -m pytest -q -ra -p no:cacheprovider --junitxml "$SCRATCH/junit.xml" "$@" | tail -40
rc=${PIPESTATUS[0]}
set -e
"$SCRATCH/venv/bin/python" -m pip uninstall -q -y cpo-engine >/dev/null 2>&1 || true
python3 - "$SCRATCH" "$rc" <<'PY'
import datetime, json, subprocess, sys, xml.etree.ElementTree as ET
from pathlib import Path

scratch, rc = Path(sys.argv[1]), int(sys.argv[2])

def pins(path):
    out = {}
    for line in Path(path).read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, ver = line.split("==", 1)
            out[name.split("[")[0].strip().lower()] = ver.strip()
    return out

locked, latest = pins("requirements/dev.lock"), pins(scratch / "locks" / "dev.lock")
moved = {n: {"locked": locked.get(n), "latest": latest.get(n)} for n in sorted(set(locked) | set(latest))
         if locked.get(n) != latest.get(n)}
failed, counts = [], {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
junit = scratch / "junit.xml"
if junit.exists():
    for suite in ET.parse(junit).getroot().iter("testsuite"):
        for k in counts:
            counts[k] += int(suite.get(k, 0))
        for case in suite.iter("testcase"):
            bad = case.find("failure") if case.find("failure") is not None else case.find("error")
            if bad is not None:
                failed.append({"test": f"{case.get('classname')}::{case.get('name')}",
                               "message": (bad.get("message") or "")[:300]})
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
with open("/proc/loadavg") as f:
    load = [float(x) for x in f.read().split()[:3]]
record = {"date": datetime.date.today().isoformat(), "commit": commit, "pytest_exit": rc,
          "passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
          "failed": counts["failures"], "errors": counts["errors"], "skipped": counts["skipped"],
          "moved": moved, "failures": failed, "load_average_at_end": load,
          "command": "bash scripts/check_latest.sh"}
out = Path("bench/results") / f"check_latest_{record['date'].replace('-', '')}.json"
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps(record, indent=2) + "\n")
print(f"check_latest: {len(moved)} package(s) moved against requirements/dev.lock:")
for n, v in moved.items():
    print(f"  {n}: {v['locked']} -> {v['latest']}")
print(f"check_latest: {record['passed']} passed, {record['failed']} failed, {record['errors']} errors, "
      f"{record['skipped']} skipped with the newest versions; record: {out}")
for f in failed:
    print(f"  FAILED {f['test']}: {f['message'][:160]}")
PY
exit "$rc"
