#!/usr/bin/env bash
# Create .venv (if missing) and install cpo_engine into it from a lock (requirements/, made by scripts/lock.sh),
# so a fresh clone installs exactly the versions that passed CI, with the CPU build of torch.
# Usage: scripts/setup_venv.sh              runtime (requirements/runtime.lock)
#        scripts/setup_venv.sh dev,local-llm  + the dev and local-LLM extras (requirements/dev.lock; also for
#                                             local-llm alone, as scripts/loop.sh asks: one lock holds both)
# INSTALLER=pip uses pip instead of uv (uv installs the same lock faster: README, "Quick start").
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
PY="${PYTHON:-python3}"
INSTALLER="${INSTALLER:-uv}"
case "$extras" in
  "") lock=requirements/runtime.lock ;;
  dev,local-llm|local-llm,dev|dev|local-llm) lock=requirements/dev.lock ;;  # scripts/loop.sh asks for local-llm
  *) echo "setup_venv: no lock for extras '$extras' (locked: none, dev,local-llm); for other extras install" \
          "from the ranges: pip install -c constraints-cpu.txt -e '.[$extras]'" >&2; exit 2 ;;
esac
[ -n "${SETUP_VENV_DRY_RUN:-}" ] && { echo "$lock"; exit 0; }  # which lock these extras install (tests)
# The CPU build of torch: on the development machine its wheel lies in /opt/wheels; elsewhere PyTorch's CPU index.
torch_src=()
if ls /opt/wheels/torch-2.13.0+cpu-*.whl >/dev/null 2>&1; then torch_src=(--find-links /opt/wheels)
else torch_src=(--extra-index-url https://download.pytorch.org/whl/cpu); fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
if [ "$INSTALLER" = uv ]; then
  # uv itself is pinned in requirements/tools.txt
  [ "uv==$(.venv/bin/python -m uv --version 2>/dev/null | cut -d' ' -f2)" = "$(cat requirements/tools.txt)" ] \
    || .venv/bin/python -m pip install -q -r requirements/tools.txt
  uv_src=("${torch_src[@]}"); [ "${torch_src[0]}" = --extra-index-url ] && uv_src+=(--index-strategy unsafe-best-match)
  .venv/bin/python -m uv pip install -q --python .venv/bin/python "${uv_src[@]}" -r "$lock"
  .venv/bin/python -m uv pip install -q --python .venv/bin/python --no-deps -e .
else
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q --no-compile --no-deps "${torch_src[@]}" -r "$lock"
  .venv/bin/python -m pip install -q --no-compile --no-deps -e .
fi
# Byte-compiled on every core (neither installer above compiles): where PYTHONDONTWRITEBYTECODE is set (many
# containers, the development machine) Python never caches what it compiles at import, and the suite runs 4x slower.
bash scripts/compile_venv.sh .venv
