"""Render a run report in headless Chromium: a screenshot of its first screen, and a layout check.

    python scripts/report_screenshot.py runs/quickstart/report.html docs/images/report_first_screen.png

The layout check injects a few lines of JavaScript into a copy of the page and reads back, from the
rendered DOM, whether anything is wider than the window (tables that run off the page), whether every
image decoded, and where the recommendation sits. Chromium comes from the Debian packages
(`apt-get install -y chromium`); as root it needs --no-sandbox.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars")

_CHECK = """<script>
window.addEventListener('load', () => {
  const doc = document.documentElement, wide = [];
  for (const el of document.querySelectorAll('table, pre, img, p, li')) {
    const r = el.getBoundingClientRect();
    if (r.right > doc.clientWidth + 1)
      wide.push(el.tagName + ':' + Math.round(r.right) + ':' + el.innerText.slice(0, 60));
  }
  const imgs = [...document.images].map(i => i.complete && i.naturalWidth > 0);
  const rec = document.getElementById('recommendation');
  const out = {scrollWidth: doc.scrollWidth, clientWidth: doc.clientWidth, wide: wide,
               images: imgs.length, imagesDecoded: imgs.filter(Boolean).length,
               recommendationTop: rec ? Math.round(rec.getBoundingClientRect().top) : null,
               recommendationText: rec ? rec.innerText : null};
  const pre = document.createElement('pre'); pre.id = 'layout-check'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def find_browser() -> str | None:
    """Path of a Chromium-family browser, or None."""
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


def _run(browser: str, args: list[str], timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="cpo_chromium_") as profile:
        return subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=timeout)


def screenshot(html: Path, png: Path, width: int = 1280, height: int = 900, browser: str | None = None,
               timeout: float = 120) -> Path:
    """PNG of the page's first ``width`` x ``height`` pixels."""
    browser = browser or find_browser()
    if browser is None:
        raise RuntimeError("no Chromium found: apt-get install -y chromium")
    png.parent.mkdir(parents=True, exist_ok=True)
    proc = _run(browser, [f"--window-size={width},{height}", f"--screenshot={png.resolve()}",
                          html.resolve().as_uri()], timeout)
    if not png.is_file():
        raise RuntimeError(f"chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return png


def layout(html: Path, width: int = 1280, height: int = 900, browser: str | None = None,
           timeout: float = 120) -> dict:
    """Render a copy of the page with the layout check and return what it measured."""
    browser = browser or find_browser()
    if browser is None:
        raise RuntimeError("no Chromium found: apt-get install -y chromium")
    with tempfile.TemporaryDirectory(prefix="cpo_report_") as tmp:
        page = Path(tmp) / "page.html"
        page.write_text(html.read_text(encoding="utf-8").replace("</body>", _CHECK + "</body>"), encoding="utf-8")
        proc = _run(browser, [f"--window-size={width},{height}", "--virtual-time-budget=10000", "--dump-dom",
                              page.as_uri()], timeout)
    start = proc.stdout.find("<pre id=\"layout-check\">")
    if start < 0:
        raise RuntimeError(f"the page did not render (exit {proc.returncode}): {proc.stderr[-2000:]}")
    text = proc.stdout[start:].split(">", 1)[1].split("</pre>", 1)[0]
    import html as html_mod

    return json.loads(html_mod.unescape(text))


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__)
        return 2
    html, png = Path(argv[0]), Path(argv[1])
    print(json.dumps(layout(html), indent=1))
    print(f"wrote {screenshot(html, png)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
