#!/usr/bin/env bash
# Byte-compile a venv's site-packages on every core (what pip does on one after `pip install --no-compile`).
# Up-to-date .pyc files are skipped, so a rerun takes seconds. Files that do not compile (templates, test
# data in some wheels) are skipped as pip skips them.
# Usage: scripts/compile_venv.sh VENV
set -euo pipefail
venv="${1:?usage: scripts/compile_venv.sh VENV}"
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
"$venv/bin/python" -m compileall -q -q -j 0 "$site" > /dev/null || true
