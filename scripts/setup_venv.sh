#!/usr/bin/env bash
# Create .venv (if missing) and install cpo_engine with the given extras, CPU torch pinned.
# Usage: scripts/setup_venv.sh [EXTRAS]   e.g. scripts/setup_venv.sh dev,local-llm
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
spec="."
[ -n "$extras" ] && spec=".[${extras}]"
# Byte-compiled on every core: pip compiles every module of torch, ray and transformers on one core (about 2
# of the 3 install minutes on the 2-core machine). The .pyc files matter: where PYTHONDONTWRITEBYTECODE is set
# (as in many containers and on the development machine) Python never caches what it compiles at import.
.venv/bin/python -m pip install -q --no-compile -c constraints-cpu.txt -e "$spec"
bash scripts/compile_venv.sh .venv
