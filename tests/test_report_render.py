"""The run report in a real headless browser (Chromium from the Debian packages, which scripts/test.sh
installs; without one these tests fail, unless CPO_NO_BROWSER=1 says to skip them):
the recommendation is on the first screen, every image is embedded and decodes, nothing is wider than
the window (tables wrap instead of running off the page)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from cpo_engine.report import Column, ReportData, Table, write_report

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("report_screenshot", ROOT / "scripts" / "report_screenshot.py")
shot = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(shot)

pytestmark = pytest.mark.skipif(shot.find_browser() is None and os.environ.get("CPO_NO_BROWSER") == "1",
                                reason="no Chromium and CPO_NO_BROWSER=1")


@pytest.fixture(autouse=True)
def _browser():
    if shot.find_browser() is None:
        pytest.fail("no Chromium: run scripts/install_browser.sh (apt-get install -y chromium), "
                    "or set CPO_NO_BROWSER=1 to skip the report-render tests")


@pytest.fixture(scope="module")
def run_report(tmp_path_factory) -> Path:
    """A real run's report (synthetic data: the run's own steps, without the encoder)."""
    from tests.test_workflow_run import _cfg, _synthetic, _write_run

    out = tmp_path_factory.mktemp("run")
    reps, _, table = _synthetic()
    paths, _ = _write_run(out, reps, table, _cfg())
    return paths["report"]


@pytest.mark.parametrize("width", [1280, 800])
def test_report_renders_with_the_recommendation_first_and_nothing_off_the_page(run_report, width):
    m = shot.layout(run_report, width=width, height=900)
    assert m["recommendationTop"] is not None and m["recommendationTop"] < 300, m
    assert m["recommendationText"].startswith("Use '") and "cpo assign --model" in m["recommendationText"]
    assert m["images"] == 4 and m["imagesDecoded"] == 4
    assert m["scrollWidth"] <= m["clientWidth"] and not m["wide"], m


def test_long_unbroken_text_wraps_inside_tables(tmp_path):
    long = "Answer:" + "x" * 400 + " " + "step-by-step/" * 40
    rows = [{"id": f"p{i}", "text": long, "v": 0.1234 * i, "lineage": " -> ".join(["edit"] * 30)} for i in range(5)]
    table = Table([Column("id", "id", "code"), Column("text", "text"), Column("v", "value", "signed"),
                   Column("lineage", "lineage")], rows)
    page = write_report(tmp_path, ReportData(headline="Use 'p0' for every query.", prompts=table, candidates=table,
                                             trace=table, summary={"a very long key " * 5: long}))
    m = shot.layout(page, width=800, height=900)
    assert m["scrollWidth"] <= m["clientWidth"] and not m["wide"], m
    png = shot.screenshot(page, tmp_path / "shot.png", width=800, height=600)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
