#!/usr/bin/env bash
# Chromium for the report-render tests (tests/test_report_render.py), from Debian's packages.
# Idempotent: with a Chromium-family browser on PATH it only says which one and returns.
# Needs root or password-less sudo for apt-get; where neither is there it says what to run and fails,
# unless CPO_NO_BROWSER=1 says to go on without one (the render tests then skip and say why).
set -euo pipefail
for b in chromium chromium-browser google-chrome google-chrome-stable; do
  if command -v "$b" >/dev/null 2>&1; then echo "install_browser: $(command -v "$b")"; exit 0; fi
done
if [ "${CPO_NO_BROWSER:-0}" = "1" ]; then
  echo "install_browser: no Chromium; CPO_NO_BROWSER=1, so the report-render tests will skip"; exit 0
fi
if [ "$(id -u)" -eq 0 ]; then SUDO=(); elif sudo -n true 2>/dev/null; then SUDO=(sudo -n); else
  echo "install_browser: the report-render tests need Chromium; run: sudo apt-get install -y chromium" >&2
  echo "  (or set CPO_NO_BROWSER=1 to run the suite without them)" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_browser: no apt-get here; install Chromium with your system's package manager" >&2
  echo "  (or set CPO_NO_BROWSER=1 to run the suite without the report-render tests)" >&2
  exit 1
fi
echo "install_browser: apt-get install chromium (Debian packages, about a minute)"
export DEBIAN_FRONTEND=noninteractive
install() { "${SUDO[@]}" apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
# with fresh package lists the install alone is enough; else (or after a failed try) update them, twice at most
install 2>/dev/null || { "${SUDO[@]}" apt-get update -qq && install; } || { sleep 10; "${SUDO[@]}" apt-get update -qq && install; }
command -v chromium
