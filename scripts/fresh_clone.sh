#!/usr/bin/env bash
# The README's two commands in N fresh clones in a row, as a new user runs them: `git clone`, then
# `bash scripts/run.sh`, then `bash scripts/test.sh`, each clone with a fresh .venv and .venv-vllm.
# Writes bench/results/fresh_clone_<date>.json in this checkout (commit, exit codes, seconds, pytest's
# last line, load average). The clones sit beside this checkout (../fc_run<i>), so ../shared/data is
# found as in a normal checkout. The uv cache stays as it is (say so if it was warm).
# Usage: scripts/fresh_clone.sh [N=3]
set -uo pipefail
cd "$(dirname "$0")/.."
N="${1:-3}"
REPO="$(pwd)"
COMMIT="$(git rev-parse --short HEAD)"
OUT="bench/results/fresh_clone_$(date -u +%Y%m%d).json"
RUNS=()
for i in $(seq 1 "$N"); do
  dir="$(dirname "$REPO")/fc_run$i"
  rm -rf "$dir"
  git clone -q "$REPO" "$dir"
  (cd "$dir" && git checkout -q "$COMMIT")
  t0=$(date +%s); (cd "$dir" && bash scripts/run.sh) >"$dir.run.log" 2>&1; rc1=$?; t1=$(date +%s)
  (cd "$dir" && bash scripts/test.sh) >"$dir.test.log" 2>&1; rc2=$?; t2=$(date +%s)
  last="$(grep -E '(passed|failed)' "$dir.test.log" | tail -1 | sed 's/=//g; s/^ *//; s/ *$//; s/"/\\"/g')"
  load="$(cut -d' ' -f1-3 /proc/loadavg)"
  RUNS+=("{\"commit\": \"$COMMIT\", \"run_sh_rc\": $rc1, \"run_sh_s\": $((t1 - t0)), \"test_sh_rc\": $rc2, \"test_sh_s\": $((t2 - t1)), \"load\": \"$load\", \"tests\": \"$last\"}")
  echo "fresh clone $i/$N at $COMMIT: run.sh rc=$rc1 $((t1 - t0)) s, test.sh rc=$rc2 $((t2 - t1)) s: $last"
  [ "$rc1" -eq 0 ] && [ "$rc2" -eq 0 ] || break
done
python3 - "$OUT" "$(IFS=,; echo "${RUNS[*]}")" <<'PY'
import json, os, platform, sys
out, runs = sys.argv[1], json.loads("[" + sys.argv[2] + "]")
old = json.load(open(out)) if os.path.exists(out) else {}
rec = {"date": out.split("_")[-1][:8], "machine": f"{os.cpu_count()} cores, {platform.machine()}",
       "commands": ["git clone <repo> DIR && cd DIR", "bash scripts/run.sh", "bash scripts/test.sh"],
       "batches": old.get("batches", [])}
rec["batches"].append({"commit": runs[0]["commit"] if runs else None, "runs": runs,
                       "all_green": bool(runs) and all(r["run_sh_rc"] == 0 and r["test_sh_rc"] == 0 for r in runs)})
json.dump(rec, open(out, "w"), indent=1)
print("wrote", out)
PY
