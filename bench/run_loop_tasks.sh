#!/usr/bin/env bash
# `cpo loop` on built-in tasks one after another (SmolLM2-135M-Instruct on a local llama.cpp server), each
# record copied to bench/results/loop_smollm2_<task>_<date>.json/.md with the load average at start and end.
#   bash bench/run_loop_tasks.sh addition sentiment comparison mixed   (extra flags: LOOP_ARGS="--parallel 2")
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
date_tag=$(date -u +%Y%m%d)
for task in "$@"; do
    out="runs/loop_${task}_${date_tag}"
    load_start=$(cut -d' ' -f1-3 /proc/loadavg)
    echo "=== $task -> $out ($(date -u +%H:%M:%S) UTC, load $load_start)"
    # shellcheck disable=SC2086
    nice -n 5 .venv/bin/cpo --log-level WARNING loop --task "$task" --out "$out" ${LOOP_ARGS:-}
    rc=$?
    echo "=== $task rc=$rc ($(date -u +%H:%M:%S) UTC)"
    if [ "$rc" = 0 ]; then
        .venv/bin/python - "$out" "bench/results/loop_smollm2_${task}_${date_tag}" "$load_start" <<'PY'
import json, shutil, sys
from pathlib import Path
out, dest, load_start = Path(sys.argv[1]), sys.argv[2], sys.argv[3].split()
report = json.loads((out / "loop_report.json").read_text())
report["machine"] = {"loadavg_start": load_start, "loadavg_end": Path("/proc/loadavg").read_text().split()[:3],
                     "cpus": __import__("os").cpu_count(), "loop_folder": str(out)}
Path(dest + ".json").write_text(json.dumps(report, indent=2) + "\n")
shutil.copyfile(out / "loop_report.md", dest + ".md")
print("wrote", dest + ".json", dest + ".md")
PY
    fi
done
