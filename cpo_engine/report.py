"""The run report: one self-contained HTML page (plots embedded as images), readable on its own.

Its first screen says what to do: which prompt to use for which queries, how sure the run is
(held-out value versus the best static prompt and the logging policy, with intervals), and the
command that applies the policy to new queries. Then: the prompts with an id -> text legend (every
plot and table names prompts by id), policy values, the per-query choice by query difficulty, prompt
effects, causal versus non-causal predictions, the searched candidates, the causal fit's diagnostics
in plain words, the run's details and a glossary of the terms used. The PNG plots are also written
under ``plots/`` for reuse. Each section is optional: one whose data is missing says so. Files are
written through a temp file and renamed, so a reader never sees half a report.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cpo_engine.utils import atomic_write_bytes, atomic_write_text


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


def _errbars(ax: Any, items: dict[str, Interval], horizontal: bool = True) -> None:
    names = list(items)
    v = np.array([items[n].value for n in names])
    lo = np.array([items[n].low for n in names])
    hi = np.array([items[n].high for n in names])
    err = np.vstack([np.where(np.isfinite(lo), v - lo, 0), np.where(np.isfinite(hi), hi - v, 0)])
    pos = np.arange(len(names))
    if horizontal:
        ax.errorbar(v, pos, xerr=err, fmt="o", capsize=3)
        ax.set_yticks(pos, [n[:48] for n in names])
    else:
        ax.bar(pos, v, yerr=err, capsize=4, color="#4c72b0")
        ax.set_xticks(pos, [n[:32] for n in names], rotation=20, ha="right")


def plot_prompt_effects(effects: dict[str, Interval]) -> bytes:
    """Horizontal interval plot of each prompt's predicted effect, sorted by effect."""
    plt = _pyplot()
    items = dict(sorted(effects.items(), key=lambda kv: kv[1].value))
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(items) + 1.2))
    _errbars(ax, items)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel("predicted change in score vs the static prompt (95% CI)")
    return _png(fig)


def plot_policy_values(values: dict[str, Interval]) -> bytes:
    """Bar chart of held-out policy values with intervals."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    _errbars(ax, values, horizontal=False)
    finite = [x for iv in values.values() for x in (iv.value, iv.low, iv.high) if np.isfinite(x)]
    if finite:
        ax.set_ylim(max(0.0, min(finite) - 0.05), max(finite) + 0.05)
    ax.set_ylabel("mean recorded score, held-out queries")
    return _png(fig)


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


def _plot_section(title: str, intro: str, payload: Any, plot: Any, name: str, plots: Path | None) -> list[str]:
    parts = [f"<h2>{html.escape(title)}</h2>"] + ([f"<p>{html.escape(intro)}</p>"] if intro else [])
    if not payload:
        return parts + ["<p class='muted'>not available for this run</p>"]
    png = plot(payload)
    if plots is not None:
        atomic_write_bytes(plots / name, png)
    return parts + [_img(png, title)]


def render(data: ReportData, plots: Path | None = None) -> str:
    """The report page as one HTML string (images inline); also writes each PNG under ``plots``."""
    parts = [f"<h1>{html.escape(data.title)}</h1>"] + _headline(data)
    parts += [f"<div class='warn'>{html.escape(w)}</div>" for w in data.diagnostic_warnings]
    parts += ["<h2 id='prompts'>Prompts</h2>", "<p>Every plot and table names prompts by id; their texts:</p>",
              _table_html(data.prompts)]
    parts += _plot_section("Held-out value of each policy", "Mean recorded score on queries the model never saw, "
                           "95% intervals.", data.policy_values, plot_policy_values, "policy_value.png", plots)
    parts += [_table_html(data.policy_table)] + [f"<p>{html.escape(n)}</p>" for n in data.notes]
    parts += _plot_section("Where the per-query choice helps: by query difficulty", "Held-out queries split "
                           "into equal groups by difficulty (1 - the query's mean recorded score over all logged "
                           "prompts).", data.tiers, plot_tiers, "uplift_by_tier.png", plots)
    parts += [_table_html(tiers_table(data.tiers))] if data.tiers else []
    parts += _plot_section("Predicted prompt effects", "Each prompt's predicted change in score versus the static "
                           "prompt, averaged over held-out queries (95% CI).", data.prompt_effects,
                           plot_prompt_effects, "prompt_effects.png", plots)
    parts += _plot_section("Causal versus non-causal model", "Each marker is a prompt: its effect predicted by "
                           "the model against the effect measured on held-out queries (both centered). Closer to the "
                           "diagonal is better.", data.comparison, plot_comparison, "causal_vs_noncausal.png", plots)
    parts += ["<h2>Searched candidates (predicted, not run by an LLM)</h2>", _table_html(data.candidates),
              "<h2>Search rounds</h2>", _table_html(data.trace),
              "<h2>Causal model diagnostics</h2>", _table_html(data.diagnostics),
              "<h2>Run details</h2>", _table_html(Table([Column("k", "item"), Column("v", "value")],
                                                        [{"k": k, "v": v} for k, v in data.summary.items()]))]
    if data.glossary:
        parts += ["<h2 id='glossary'>Terms used</h2><dl>"] + [
            f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in data.glossary.items()] + ["</dl>"]
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><meta name='viewport' "
            f"content='width=device-width, initial-scale=1'><title>{html.escape(data.title)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>")


def write_report(out_dir: str | Path, data: ReportData) -> Path:
    """Write ``report.html`` (self-contained) and its PNG plots under ``out_dir/plots``; returns the HTML path."""
    out = Path(out_dir)
    return atomic_write_text(out / "report.html", render(data, out / "plots"))


__all__ = ["Interval", "Column", "Table", "ReportData", "render", "write_report", "fmt", "tier_name", "tiers_table",
           "plot_prompt_effects", "plot_policy_values", "plot_tiers", "plot_comparison"]
