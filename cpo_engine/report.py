"""The run report: one self-contained HTML page (plots embedded as images), readable on its own.

Its first screen says what to do: which prompt to use for which queries, how sure the run is
(held-out value versus the best static prompt and the logging policy, with intervals), and the
command that applies the policy to new queries. Then: the prompts with an id -> text legend (every
plot and table names prompts by id), policy values, the per-query choice by query difficulty, prompt
effects, causal versus non-causal predictions, the searched candidates, the causal fit's diagnostics
in plain words, the run's details and a glossary of the terms used. The PNG plots are also written
under ``plots/`` for reuse. Each section is optional: one whose data is missing says so. Files are
written through a temp file and renamed, so a reader never sees half a report.

This module is the one place that renders ``report.html``. The page is a list of :class:`Section`\ s
(a key, a title, an HTML body), kept beside it in ``report_sections.json``; a later stage (`cpo verify`)
contributes its own section with :func:`add_section`, which replaces that stage's earlier section and
renders the page again, so verifying twice shows one verification section and the run's sections stay.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cpo_engine.causal.evidence import NO_DEPARTURES, is_no_difference
from cpo_engine.utils import atomic_write_bytes, atomic_write_json, atomic_write_text


@dataclass
class Interval:
    """A point estimate with a confidence interval (NaN bounds when there is none)."""

    value: float
    low: float = float("nan")
    high: float = float("nan")


@dataclass
class Column:
    """A table column: the row key, its header, and how values are shown ('text', 'num', 'signed',
    'pct', 'int', 'code', 'range': an interval "a to b" that may wrap)."""

    key: str
    label: str
    kind: str = "text"


@dataclass
class Table:
    """Rows (dicts) shown with the given columns; ``note`` is printed under the table."""

    columns: list[Column]
    rows: list[dict[str, Any]]
    note: str = ""


@dataclass
class Section:
    """One section of the report page: a heading and its HTML body. Every stage that has something to say on
    the page contributes one (the run its sections, `cpo verify` its verification, ...); :func:`render_page`
    lays them out in order. ``key`` names it: a stage that adds a section again replaces its own.

    Build the body with :func:`table_section` (a :class:`Table`, an intro and notes, escaped here) rather
    than by hand."""

    key: str
    title: str
    body: str
    """HTML (already escaped)."""

    def to_dict(self) -> dict[str, str]:
        return {"key": self.key, "title": self.title, "body": self.body}


def table_section(key: str, title: str, table: Table | None, intro: str = "", notes: Sequence[str] = ()) -> Section:
    """A section holding one table, with a plain-text intro above it and plain-text notes below."""
    body = ((f"<p>{html.escape(intro)}</p>" if intro else "") + _table_html(table)
            + "".join(f"<p>{html.escape(n)}</p>" for n in notes))
    return Section(key, title, body)


@dataclass
class ReportData:
    """Everything the report shows; every field may be left empty.

    Attributes
    ----------
    title : str
        Page title.
    headline : str
        The recommendation in one sentence (plain text), shown first.
    headline_details : list of str
        How sure the run is, what the per-query choice does, what is unverified (one line each).
    commands : list of str
        Commands to run next (shown as code), e.g. `cpo assign` for new queries.
    prompts : Table
        The legend: prompt id -> text, with each prompt's numbers.
    summary : dict
        Run details (label -> value), shown near the end.
    prompt_effects : dict of name -> Interval
        Predicted effect of each prompt (vs the static prompt) with its interval.
    policy_values : dict of name -> Interval
        Held-out value of the per-query policy and of the baselines.
    policy_table : Table
        The same values as a table, with differences and intervals.
    tiers : list of dict
        Rows of :func:`cpo_engine.search.pool.by_tier`.
    comparison : dict of model name -> (predicted effects, measured effects, labels)
        Causal vs non-causal model predictions of per-prompt effects against held-out measurements.
    candidates : Table
        The generative search's top candidates.
    trace : Table
        Search rounds.
    notes : list of str
        Findings in plain words, under the policy values.
    diagnostics : Table
        The causal fit's diagnostics, one row per quantity, each with what it means.
    diagnostic_warnings : list of str
        Warnings raised by the fit and by the policy checks.
    glossary : dict of term -> definition
        Terms used on the page.
    value_axis : (low, high), optional
        The range the score can take (0 to 1 for 0/1 scores): the value chart's axis.
    sections : list of Section
        Further sections contributed by other stages, shown before the glossary.
    """

    title: str = "cpo_engine run report"
    headline: str = ""
    headline_details: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    prompts: Table | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    prompt_effects: dict[str, Interval] = field(default_factory=dict)
    policy_values: dict[str, Interval] = field(default_factory=dict)
    policy_table: Table | None = None
    tiers: list[dict[str, Any]] = field(default_factory=list)
    comparison: dict[str, tuple[Sequence[float], Sequence[float], Sequence[str]]] = field(default_factory=dict)
    candidates: Table | None = None
    trace: Table | None = None
    notes: list[str] = field(default_factory=list)
    diagnostics: Table | None = None
    diagnostic_warnings: list[str] = field(default_factory=list)
    glossary: dict[str, str] = field(default_factory=dict)
    value_axis: tuple[float, float] | None = None
    sections: list[Section] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ plots


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def _errbars(ax: Any, items: dict[str, Interval]) -> None:
    names = list(items)
    v = np.array([items[n].value for n in names])
    lo = np.array([items[n].low for n in names])
    hi = np.array([items[n].high for n in names])
    err = np.vstack([np.where(np.isfinite(lo), v - lo, 0), np.where(np.isfinite(hi), hi - v, 0)])
    pos = np.arange(len(names))
    ax.errorbar(v, pos, xerr=err, fmt="o", capsize=3)
    ax.set_yticks(pos, list(names))  # full labels: the figure widens (bbox_inches='tight'), nothing is cut


def plot_prompt_effects(effects: dict[str, Interval]) -> bytes:
    """Horizontal interval plot of each prompt's predicted effect, sorted by effect."""
    plt = _pyplot()
    items = dict(sorted(effects.items(), key=lambda kv: kv[1].value))
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(items) + 1.2))
    _errbars(ax, items)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel("predicted change in score vs the static prompt (95% CI)")
    return _png(fig)


def plot_policy_values(values: dict[str, Interval], axis: tuple[float, float] | None = None) -> bytes:
    """Dot plot of held-out policy values with their 95% intervals, one row per policy (full labels), on an
    honest axis: ``axis`` (the range the score can take, 0 to 1 for 0/1 scores), widened only to show an
    interval that leaves it; without ``axis``, from 0 when every value is non-negative. A bar chart whose
    axis starts at 0.40 made a difference of 0.01 look large."""
    return _png(policy_values_figure(values, axis)[0])


def policy_values_figure(values: dict[str, Interval], axis: tuple[float, float] | None = None) -> tuple[Any, Any]:
    """The figure and axes of :func:`plot_policy_values` (the caller closes it)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(values) + 1.3))
    items = dict(reversed(list(values.items())))  # the first policy on top
    _errbars(ax, items)
    ax.set_xlim(*value_axis(values, axis))
    ax.grid(axis="x", color="#e5e5e5", lw=0.6)
    ax.set_xlabel("mean recorded score, held-out queries (dot: value; line: 95% CI)")
    return fig, ax


def value_axis(values: dict[str, Interval], axis: tuple[float, float] | None = None) -> tuple[float, float]:
    """The value chart's x range: ``axis`` (or 0 to the largest value, when every value is non-negative) widened
    to every finite value and bound, with a small margin so a dot on an edge stays visible."""
    finite = [x for iv in values.values() for x in (iv.value, iv.low, iv.high) if np.isfinite(x)]
    if axis is None:
        axis = (min(0.0, *finite), max(finite)) if finite else (0.0, 1.0)
    lo, hi = min([axis[0], *finite]), max([axis[1], *finite])
    pad = 0.02 * (hi - lo) if hi > lo else 0.5
    return lo - pad, hi + pad


def plot_tiers(tiers: list[dict[str, Any]]) -> bytes:
    """Uplift over the best static prompt by query-difficulty tier, with intervals."""
    rows = [t for t in tiers if "uplift_diff" in t]
    items = {f"{tier_name(t['tier'], len(tiers))} (n={t['n']})":
             Interval(t["uplift_diff"], t["uplift_ci_low"], t["uplift_ci_high"]) for t in rows}
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(items) + 1.5))
    _errbars(ax, items)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel("per-query choice minus best static prompt, held-out (95% CI)")
    return _png(fig)


def plot_comparison(comparison: dict[str, tuple[Sequence[float], Sequence[float], Sequence[str]]]) -> bytes:
    """Predicted vs measured per-prompt effects, one marker style per model, with the diagonal."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    all_v: list[float] = []
    for (name, (pred, meas, _)), marker in zip(comparison.items(), "os^Dv"):
        pred, meas = np.asarray(pred, float), np.asarray(meas, float)
        ok = np.isfinite(pred) & np.isfinite(meas)
        pred, meas = pred[ok], meas[ok]
        if len(pred) == 0:  # nothing measured for this model: no marker (np.mean of nothing warns)
            continue
        corr = np.corrcoef(pred, meas)[0, 1] if len(pred) > 2 else float("nan")
        rmse = float(np.sqrt(np.mean((pred - meas) ** 2)))
        ax.scatter(meas, pred, marker=marker, label=f"{name} (r={corr:.2f}, rmse={rmse:.3f})")
        all_v += list(pred) + list(meas)
    if all_v:
        lo, hi = min(all_v), max(all_v)
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8)
    ax.set_xlabel("effect measured on held-out queries (centered)")
    ax.set_ylabel("predicted effect (centered)")
    ax.legend(fontsize=8)
    return _png(fig)


def tiers_table(tiers: list[dict[str, Any]]) -> Table:
    """Rows of :func:`cpo_engine.search.pool.by_tier` with readable columns."""
    rows = [dict(t, name=tier_name(t["tier"], len(tiers)),
                 range=f"{t['difficulty_low']:.2f} to {t['difficulty_high']:.2f}",
                 ci=(f"{t['uplift_ci_low']:+.4f} to {t['uplift_ci_high']:+.4f}" if "uplift_ci_low" in t else ""))
            for t in tiers]
    for r in rows:  # no query of the tier left the static prompt: a zero-width interval is no certainty
        if is_no_difference(r.get("uplift_diff"), r.get("uplift_ci_low"), r.get("uplift_ci_high")):
            r.update(uplift_diff=None, ci=NO_DEPARTURES)
    return Table([Column("name", "queries"), Column("n", "n", "int"), Column("range", "difficulty", "range"),
                  Column("policy_value", "per-query choice", "num"), Column("static_value", "best static", "num"),
                  Column("uplift_diff", "difference", "signed"), Column("ci", "95% CI", "range")], rows)


def tier_name(tier: int, n_tiers: int) -> str:
    """'easiest third', 'middle third', 'hardest third' (or 'tier k of n')."""
    if n_tiers == 3:
        return ("easiest", "middle", "hardest")[tier] + " third"
    return f"difficulty tier {tier + 1} of {n_tiers}"


# ------------------------------------------------------------------------------------------ html


def fmt(v: Any, kind: str = "text") -> str:
    """A value as shown on the page: 4 decimals, signed differences, percentages, thousands separators."""
    if v is None or (isinstance(v, (float, np.floating)) and not np.isfinite(v)):
        return "" if v is None else "n/a"
    if isinstance(v, str):
        return v
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if kind == "num":
        return f"{v:.4f}"
    if kind == "signed":
        return f"{v:+.4f}"
    if kind == "pct":
        return f"{v:.0%}" if v >= 0.01 or v == 0 else f"{v:.1%}"
    if kind == "int":
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        return f"{v:.4g}"
    return str(v)


def _table_html(t: Table | None) -> str:
    if t is None or not t.rows:
        return "<p class='muted'>none</p>"
    head = "".join(f"<th class='{c.kind}'>{html.escape(c.label)}</th>" for c in t.columns)
    body = "".join("<tr>" + "".join(
        f"<td class='{c.kind}'>{_cell(r.get(c.key), c.kind)}</td>" for c in t.columns) + "</tr>" for r in t.rows)
    note = f"<p class='note'>{html.escape(t.note)}</p>" if t.note else ""
    return f"<div class='wrap'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>{note}"


def _cell(v: Any, kind: str) -> str:
    text = html.escape(fmt(v, kind))
    return f"<code>{text}</code>" if kind == "code" and text else text


def _img(png: bytes, alt: str) -> str:
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


_CSS = """
body{font-family:-apple-system,'Segoe UI',Roboto,sans-serif;max-width:1000px;margin:1.5em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd}
.headline{background:#eef5ee;border-left:5px solid #2e7d32;padding:.8em 1.1em;margin:1em 0}
.headline p.main{font-size:1.2em;font-weight:600;margin:.2em 0 .6em}
.headline ul{margin:.3em 0 .3em 1.1em;padding:0}
.warn{background:#fff6e5;border-left:5px solid #e69500;padding:.5em 1em;margin:.8em 0}
pre{background:#f5f5f5;padding:.6em .8em;white-space:pre-wrap;overflow-wrap:anywhere;font-size:13px}
.wrap{max-width:100%;overflow-x:auto}
table{border-collapse:collapse;font-size:13px;margin:.5em 0;width:100%;table-layout:auto}
th,td{border:1px solid #d5d5d5;padding:3px 6px;text-align:left;vertical-align:top;overflow-wrap:break-word}
th{background:#f3f3f3}td.num,td.signed,td.pct,td.int{text-align:right;white-space:nowrap}
td.code{white-space:nowrap}td.text{min-width:7em;overflow-wrap:anywhere}td.range{text-align:right;white-space:nowrap}
@media (max-width:1000px){td.range{white-space:normal;min-width:5em}}
code{font-size:12px}
img{max-width:100%;height:auto;border:1px solid #eee;display:block;margin:.5em 0}
.muted,.note{color:#666;font-size:13px}dt{font-weight:600;margin-top:.4em}dd{margin-left:1.2em}
"""


def _headline(data: ReportData) -> list[str]:
    if not data.headline:
        return []
    items = "".join(f"<li>{html.escape(d)}</li>" for d in data.headline_details)
    cmds = "".join(f"<pre>{html.escape(c)}</pre>" for c in data.commands)
    nxt = f"<p>Apply it to new queries (a table of query_id, query_text):</p>{cmds}" if cmds else ""
    return [f"<div class='headline' id='recommendation'><p class='main'>{html.escape(data.headline)}</p>"
            f"<ul>{items}</ul>{nxt}</div>"]


def _plot_body(title: str, intro: str, payload: Any, plot: Any, name: str, plots: Path | None) -> str:
    body = f"<p>{html.escape(intro)}</p>" if intro else ""
    if not payload:
        return body + "<p class='muted'>not available for this run</p>"
    png = plot(payload)
    if plots is not None:
        atomic_write_bytes(plots / name, png)
    return body + _img(png, title)


def run_sections(data: ReportData, plots: Path | None = None) -> list[Section]:
    """The sections of a run's page, in order: the recommendation first, then the evidence; the sections other
    stages contributed (``data.sections``) before the glossary. Writes each PNG under ``plots``."""
    values = "Held-out value of each policy"
    tiers = "Where the per-query choice helps: by query difficulty"
    out = [Section("recommendation", "", "".join(_headline(data) + [
               f"<div class='warn'>{html.escape(w)}</div>" for w in data.diagnostic_warnings])),
           Section("prompts", "Prompts", "<p>Every plot and table names prompts by id; their texts:</p>"
                   + _table_html(data.prompts)),
           Section("policy_values", values, _plot_body(
               values, "Mean recorded score on queries the model never saw, 95% intervals, on the score's own "
               "scale.", data.policy_values, lambda v: plot_policy_values(v, data.value_axis), "policy_value.png",
               plots) + _table_html(data.policy_table) + "".join(f"<p>{html.escape(n)}</p>" for n in data.notes)),
           Section("tiers", tiers, _plot_body(
               tiers, "Held-out queries split into equal groups by difficulty (1 - the query's mean recorded score "
               "over all logged prompts).", data.tiers, plot_tiers, "uplift_by_tier.png", plots)
               + (_table_html(tiers_table(data.tiers)) if data.tiers else "")),
           Section("prompt_effects", "Predicted prompt effects", _plot_body(
               "Predicted prompt effects", "Each prompt's predicted change in score versus the static prompt, "
               "averaged over held-out queries (95% CI).", data.prompt_effects, plot_prompt_effects,
               "prompt_effects.png", plots)),
           Section("comparison", "Causal versus non-causal model", _plot_body(
               "Causal versus non-causal model", "Each marker is a prompt: its effect predicted by the model against "
               "the effect measured on held-out queries (both centered). Closer to the diagonal is better.",
               data.comparison, plot_comparison, "causal_vs_noncausal.png", plots)),
           table_section("candidates", "Searched candidates (predicted, not run by an LLM)", data.candidates),
           table_section("trace", "Search rounds", data.trace),
           table_section("diagnostics", "Causal model diagnostics", data.diagnostics),
           table_section("details", "Run details", Table([Column("k", "item"), Column("v", "value")],
                                                         [{"k": k, "v": v} for k, v in data.summary.items()])),
           *data.sections]
    if data.glossary:
        out.append(Section("glossary", "Terms used", "<dl>" + "".join(
            f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in data.glossary.items()) + "</dl>"))
    return out


def render_page(title: str, sections: Sequence[Section]) -> str:
    """The page: the title, then each section (its heading, anchored by its key, and its body)."""
    parts = [f"<h1>{html.escape(title)}</h1>"]
    for s in sections:
        head = f"<h2 id='{html.escape(s.key)}'>{html.escape(s.title)}</h2>" if s.title else ""
        parts.append(f"<section class='cpo-section' data-key='{html.escape(s.key)}'>{head}{s.body}</section>")
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><meta name='viewport' "
            f"content='width=device-width, initial-scale=1'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>")


def render(data: ReportData, plots: Path | None = None) -> str:
    """The report page as one HTML string (images inline); also writes each PNG under ``plots``."""
    return render_page(data.title, run_sections(data, plots))


#: Beside report.html: the page's title and sections, from which it is re-rendered when a stage adds one.
SECTIONS_FILE = "report_sections.json"
SECTIONS_FORMAT = "cpo-report-sections/1"


def write_page(out_dir: str | Path, title: str, sections: Sequence[Section]) -> Path:
    """Write ``report.html`` from ``sections`` and keep them in :data:`SECTIONS_FILE` (sections first, so the
    page never shows a section the file lacks); returns the HTML path."""
    out = Path(out_dir)
    atomic_write_json(out / SECTIONS_FILE, {"format": SECTIONS_FORMAT, "title": title,
                                            "sections": [s.to_dict() for s in sections]})
    return atomic_write_text(out / "report.html", render_page(title, sections))


def write_report(out_dir: str | Path, data: ReportData) -> Path:
    """Write ``report.html`` (self-contained), its sections (:data:`SECTIONS_FILE`) and its PNG plots under
    ``out_dir/plots``; returns the HTML path."""
    out = Path(out_dir)
    return write_page(out, data.title, run_sections(data, out / "plots"))


def read_sections(out_dir: str | Path) -> tuple[str, list[Section]] | None:
    """The title and sections of the report in ``out_dir`` (None: no report there, or one written before
    reports kept their sections)."""
    import json

    path = Path(out_dir) / SECTIONS_FILE
    if not path.is_file():
        return None
    doc = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or doc.get("format") != SECTIONS_FORMAT:
        return None
    return doc["title"], [Section(s["key"], s["title"], s["body"]) for s in doc["sections"]]


def add_section(out_dir: str | Path, section: Section, before: str = "glossary") -> Path | None:
    """Add ``section`` to the report in ``out_dir`` and render the page again: a section with the same key is
    replaced where it stands, a new one goes before the section keyed ``before`` (the glossary; last when
    there is none). Returns the page, or None when ``out_dir`` holds no report with sections (nothing is
    written then: an older run's page is not patched)."""
    read = read_sections(out_dir)
    if read is None:
        return None
    title, sections = read
    keys = [s.key for s in sections]
    if section.key in keys:
        sections[keys.index(section.key)] = section
    else:
        sections.insert(keys.index(before) if before in keys else len(sections), section)
    return write_page(out_dir, title, sections)


__all__ = ["Interval", "Column", "Table", "ReportData", "Section", "table_section", "run_sections", "render_page",
           "render", "write_page", "write_report", "read_sections", "add_section", "SECTIONS_FILE", "value_axis",
           "fmt", "tier_name", "tiers_table", "plot_prompt_effects", "plot_policy_values", "policy_values_figure",
           "plot_tiers", "plot_comparison"]
