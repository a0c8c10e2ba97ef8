#!/usr/bin/env bash
# Quick start (1): install into .venv and run the main job on the bundled example.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
export OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/cpo run --out "${CPO_RUN_DIR:-runs/quickstart}" "$@"
