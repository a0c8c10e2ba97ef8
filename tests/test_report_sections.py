"""The run report as one page of sections (cpo_engine.report), and what it says on a real run folder
(the run's own steps on seeded synthetic data, without the encoder, as tests/test_report_render.py builds it):
verify contributes its section through the report module (once, however often it runs); the value chart is a
dot plot on the score's own axis with full labels; the logging policy has one value; a policy that never
leaves the static prompt reads "same as the static prompt (no departures)"; a searched prompt is suggested on
the first screen only when its interval allows a gain."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest

from cpo_engine.causal.evidence import NO_DEPARTURES
from cpo_engine.causal.policy_values import LOGGING
from cpo_engine.report import SECTIONS_FILE, Section, add_section, policy_values_figure, read_sections

RUN_KEYS = ["recommendation", "prompts", "policy_values", "tiers", "prompt_effects", "comparison", "candidates",
            "trace", "diagnostics", "details", "glossary"]


def _uneven(reps: SimpleNamespace, table: pa.Table, seed: int = 1) -> tuple[SimpleNamespace, pa.Table]:
    """Drop samples so cells hold 1 to 3 rows: a query's mean logged score (rows) then differs from the mean
    of its cell means (prompts), the two definitions of the logging policy's value that once sat side by side."""
    rng = np.random.default_rng(seed)
    keep = np.ones(table.num_rows, dtype=bool)
    for start in range(0, table.num_rows, 3):  # _synthetic writes each cell's 3 samples in a row
        keep[start + 1: start + 1 + rng.integers(0, 3)] = False
    reps = SimpleNamespace(**(vars(reps) | {"row_query": reps.row_query[keep], "row_prompt": reps.row_prompt[keep]}))
    return reps, table.filter(pa.array(keep))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> SimpleNamespace:
    """A real run folder whose per-query choice (selection.z = 8) never leaves the static prompt."""
    from tests.test_workflow_run import _cfg, _synthetic, _write_run

    out = tmp_path_factory.mktemp("run")
    reps, _, table = _synthetic()
    reps, table = _uneven(reps, table)
    cfg = _cfg()
    paths, pool = _write_run(out, reps, table, replace(cfg, selection=replace(cfg.selection, z=8.0)))
    return SimpleNamespace(out=out, paths=paths, pool=pool, reps=reps)


def _keys(page: str) -> list[str]:
    return re.findall(r"<section class='cpo-section' data-key='([^']+)'>", page)


def _verification(shift: float) -> dict:
    """A verification report as the verify stage writes it (its own summarize on measured outcomes)."""
    from cpo_engine.workflows.verify import Arm, Predictions, summarize

    rng = np.random.default_rng(0)
    n, truth = 40, [0.4, 0.4 + shift, 0.3]
    Y = np.stack([(rng.random(n) < p).astype(float) for p in truth], axis=1)
    arms = [Arm(f"p{j}", f"prompt {j}", "incumbent" if j == 0 else "searched") for j in range(3)]
    pred = Predictions(effect=np.zeros((n, 3)), se=np.full((n, 3), 0.01), static_effect=np.array([0.0, 0.1, -0.1]),
                       static_se=np.full(3, 0.01), choice=np.zeros(n, dtype=np.int64))
    return {"baseline": {"id": "p0", "role": "incumbent", "text": "prompt 0"},
            "budget": {"queries": n, "samples": 1, "max_tokens": 16, "prompts": 3, "calls": 3 * n},
            **summarize(arms, Y, pred, "test")}


def test_verify_adds_its_section_once_however_often_it_runs_and_the_run_sections_stay(run):
    from cpo_engine.workflows.verify import mark_report

    page = run.out / "report.html"
    assert _keys(page.read_text()) == RUN_KEYS
    mark_report(page, _verification(0.3))
    first = page.read_text()
    mark_report(page, _verification(-0.2))  # verified again: its section is replaced, not appended
    html = page.read_text()
    assert _keys(html) == RUN_KEYS[:-1] + ["verification", "glossary"]
    assert html.count("Verification with the LLM") == 1 and html != first
    assert "40 held-out queries x 3 prompts" in html and "Calibration of the reward model" in html
    title, sections = read_sections(run.out)  # the page is rendered from the kept sections, nothing else
    assert [s.key for s in sections] == _keys(html) and title.startswith("cpo run report")
    for key in RUN_KEYS:  # every run section is still on the page, with its body unchanged
        body = next(s.body for s in sections if s.key == key)
        assert body in html
    assert html.count("<img ") == 4


def test_add_section_refuses_to_patch_a_page_without_sections(tmp_path):
    (tmp_path / "report.html").write_text("<html><body>an older run's page</body></html>")
    assert add_section(tmp_path, Section("verification", "V", "<p>x</p>")) is None
    assert (tmp_path / "report.html").read_text() == "<html><body>an older run's page</body></html>"
    assert not (tmp_path / SECTIONS_FILE).exists()


def test_value_chart_is_a_dot_plot_on_the_score_axis_with_full_labels(run):
    from cpo_engine.report import Interval
    from cpo_engine.workflows.run_outputs import score_axis

    axis = score_axis(run.pool)
    assert axis == (0.0, 1.0)  # 0/1 scores
    labels = {"per-query, causal (LCB) [measured]": Interval(0.62, 0.60, 0.64),
              f"{LOGGING} [measured]": Interval(0.42, 0.41, 0.43)}
    fig, ax = policy_values_figure(labels, axis)
    lo, hi = ax.get_xlim()
    assert lo <= 0.0 and hi >= 1.0 and hi - lo < 1.1  # the whole score range, no zoom on the values
    assert [t.get_text() for t in ax.get_yticklabels()] == list(reversed(labels))  # full labels, none cut
    assert not ax.patches  # dots with intervals, not bars
    import matplotlib.pyplot as plt

    plt.close(fig)
    assert (run.out / "plots" / "policy_value.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_logging_policy_has_one_value_on_the_page(run):
    from cpo_engine.data.grid import nan_mean

    pv = run.pool.policy_values
    value = pv.estimates[LOGGING].value
    cell_means = float(nan_mean(run.pool.Y_test, axis=1).mean())
    assert f"{value:.4f}" != f"{cell_means:.4f}"  # the fixture tells the two definitions apart
    summary = json.loads((run.out / "summary.json").read_text())
    assert summary["held_out"]["logging_policy"]["value"] == pytest.approx(value)
    page = (run.out / "report.html").read_text()
    assert f"{value:.4f}" in page and f"{cell_means:.4f}" not in page
    assert page.count(LOGGING) >= 3  # the headline, the table and the chart name it alike


def test_a_policy_that_never_departs_reads_same_as_the_static_prompt(run):
    ev = run.pool.evaluations["causal_lcb"]
    assert ev["share_not_static"] == 0 and ev["vs_static"]["ci_low"] == ev["vs_static"]["ci_high"] == 0
    page = (run.out / "report.html").read_text()
    assert NO_DEPARTURES in page
    assert "+0.0000 to +0.0000" not in page and "(95% CI +0.0000" not in page
    first = re.search(r"<div class='headline'.*?</div>", page, re.S).group(0)
    assert NO_DEPARTURES in first


def test_no_searched_prompt_is_suggested_unless_its_interval_allows_a_gain(run):
    import pyarrow.parquet as pq

    from cpo_engine.workflows.run_outputs import searched_suggestion

    cands = pq.read_table(run.out / "search" / "candidates.parquet")
    shown = searched_suggestion(cands)
    new = [r for r in cands.to_pylist() if r["round"] > 0 and r["in_support"]]
    assert new and len(shown) == 1
    gain = [r for r in new if r["uplift_ci_high"] > 0]
    if gain:
        assert shown[0].startswith("Best searched prompt") and f"\"{gain[0]['text']}\"" in shown[0]
    # the same candidates, each predicted worse than the static prompt with an interval that excludes a gain
    worst = max(r["uplift_ci_high"] for r in new) + 0.01
    worse = cands
    for col in ("uplift_vs_best_logged", "uplift_ci_low", "uplift_ci_high"):
        worse = worse.set_column(worse.column_names.index(col), col, pa.array(np.asarray(worse[col]) - worst))
    line = searched_suggestion(worse)
    assert len(line) == 1 and line[0].startswith("No searched prompt is suggested")
    # one candidate allows a gain again (upper bound above 0): that one is suggested, not a better-ranked loser
    hi = np.asarray(worse["uplift_ci_high"]).copy()
    pick = next(i for i, r in enumerate(worse.to_pylist()) if r["round"] > 0 and r["in_support"] and i > 0)
    hi[pick] = 0.02
    line = searched_suggestion(worse.set_column(worse.column_names.index("uplift_ci_high"), "uplift_ci_high",
                                                pa.array(hi)))
    assert line[0].startswith("Best searched prompt") and f"\"{worse['text'][pick].as_py()}\"" in line[0]


def test_every_run_folder_names_its_kind_and_verify_reads_it(run, tmp_path):
    from cpo_engine.exceptions import ConfigError
    from cpo_engine.settings import VerifyJobConfig
    from cpo_engine.workflows.common import read_kind, write_manifest
    from cpo_engine.workflows.verify import verify_job

    ope = tmp_path / "ope"
    ope.mkdir()
    write_manifest(ope, "ope", {"data": "x"}, {"json": ope / "ope.json"})
    assert read_kind(ope) == "ope" and json.loads((ope / "manifest.json").read_text())["outputs"] == {"json": "ope.json"}
    with pytest.raises(ConfigError, match=r"a `cpo ope` folder .*kind 'ope'"):
        verify_job(VerifyJobConfig(run=str(ope)))
    with pytest.raises(ConfigError, match="not a cpo output folder"):
        verify_job(VerifyJobConfig(run=str(run.out / "search")))  # the files of a run, but no manifest
    with pytest.raises(ValueError, match="unknown kind"):
        write_manifest(tmp_path, "report")
    # a command never writes into (and relabels) another command's folder: refused before any work
    from cpo_engine.settings import OptimizeConfig
    from cpo_engine.workflows.optimize import optimize

    with pytest.raises(ConfigError, match=r"--out .* is a `cpo ope` folder.*`cpo optimize` would mix"):
        optimize(OptimizeConfig(model=str(run.out), out=str(ope)))
    assert read_kind(ope) == "ope"
