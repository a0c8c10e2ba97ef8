"""The run report: one self-contained HTML page with PNG plots beside it.

Plots: prompt effects with intervals; policy value vs baselines (with intervals); uplift of the
per-query choice over the best static prompt by query-difficulty tier; causal vs non-causal
(predicted prompt effects against the effects measured on held-out queries). Each section is
optional: a plot whose data is missing is left out, and the page says so. Files are written through
a temp file and renamed, so a reader never sees half a report.
"""

from __future__ import annotations

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
class ReportData:
    """Everything the report shows; every field may be left empty.

    Attributes
    ----------
    title : str
        Page title.
    summary : dict
        Key facts shown as a table at the top (data, split, model, timings, ...).
    prompt_effects : dict of name -> Interval
        Predicted effect of each prompt (vs the reference) with its interval.
    policy_values : dict of name -> Interval
        Held-out value of the per-query policy and of the baselines.
    tiers : list of dict
        Rows of :func:`cpo_engine.search.pool.by_tier`.
    comparison : dict of model name -> (predicted effects, measured effects, labels)
        Causal vs non-causal model predictions of per-prompt effects against held-out measurements.
    top_candidates : list of dict
        Rows for the generative search's top candidates (text, uplift, interval, lineage).
    trace : list of dict
        Search trace rows.
    notes : list of str
        Free-text findings shown under the summary.
    diagnostics : str
        The causal fit's diagnostics (nuisance R^2, overlap, effective sample size, conditioning)
        and its warnings, shown verbatim.
    """

    title: str = "cpo_engine run report"
    summary: dict[str, Any] = field(default_factory=dict)
    prompt_effects: dict[str, Interval] = field(default_factory=dict)
    policy_values: dict[str, Interval] = field(default_factory=dict)
    tiers: list[dict[str, Any]] = field(default_factory=list)
    comparison: dict[str, tuple[Sequence[float], Sequence[float], Sequence[str]]] = field(default_factory=dict)
    top_candidates: list[dict[str, Any]] = field(default_factory=list)
    trace: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    diagnostics: str = ""


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _errbars(ax: Any, items: dict[str, Interval], horizontal: bool = True) -> None:
    names = list(items)
    v = np.array([items[n].value for n in names])
    lo = np.array([items[n].low for n in names])
    hi = np.array([items[n].high for n in names])
    err = np.vstack([np.where(np.isfinite(lo), v - lo, 0), np.where(np.isfinite(hi), hi - v, 0)])
    pos = np.arange(len(names))
    if horizontal:
        ax.errorbar(v, pos, xerr=err, fmt="o", capsize=3)
        ax.set_yticks(pos, [n[:40] for n in names])
    else:
        ax.bar(pos, v, yerr=err, capsize=4, color="#4c72b0")
        ax.set_xticks(pos, names, rotation=20, ha="right")


def plot_prompt_effects(effects: dict[str, Interval], path: Path) -> Path:
    """Horizontal interval plot of each prompt's predicted effect, sorted by effect."""
    plt = _pyplot()
    items = dict(sorted(effects.items(), key=lambda kv: kv[1].value))
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(items) + 1.2))
    _errbars(ax, items)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel("predicted effect on score vs reference (95% CI)")
    return _save(fig, path)


def plot_policy_values(values: dict[str, Interval], path: Path) -> Path:
    """Bar chart of held-out policy values with intervals."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    _errbars(ax, values, horizontal=False)
    finite = [x for iv in values.values() for x in (iv.value, iv.low, iv.high) if np.isfinite(x)]
    if finite:
        ax.set_ylim(max(0.0, min(finite) - 0.05), max(finite) + 0.05)
    ax.set_ylabel("mean recorded score on held-out queries")
    return _save(fig, path)


def plot_tiers(tiers: list[dict[str, Any]], path: Path) -> Path:
    """Uplift over the best static prompt by query-difficulty tier, with intervals."""
    rows = [t for t in tiers if "uplift_diff" in t]
    items = {f"tier {t['tier']} (difficulty {t['difficulty_low']:.2f}-{t['difficulty_high']:.2f}, n={t['n']})":
             Interval(t["uplift_diff"], t["uplift_ci_low"], t["uplift_ci_high"]) for t in rows}
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(items) + 1.5))
    _errbars(ax, items)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel("per-query choice minus best static prompt (95% CI)")
    return _save(fig, path)


def plot_comparison(comparison: dict[str, tuple[Sequence[float], Sequence[float], Sequence[str]]],
                    path: Path) -> Path:
    """Predicted vs measured per-prompt effects, one marker style per model, with the diagonal."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    all_v: list[float] = []
    for (name, (pred, meas, _)), marker in zip(comparison.items(), "os^Dv"):
        pred, meas = np.asarray(pred, float), np.asarray(meas, float)
        ok = np.isfinite(pred) & np.isfinite(meas)
        pred, meas = pred[ok], meas[ok]
        corr = np.corrcoef(pred, meas)[0, 1] if len(pred) > 2 else float("nan")
        rmse = float(np.sqrt(np.mean((pred - meas) ** 2)))
        ax.scatter(meas, pred, marker=marker, label=f"{name} (r={corr:.2f}, rmse={rmse:.3f})")
        all_v += list(pred) + list(meas)
    if all_v:
        lo, hi = min(all_v), max(all_v)
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8)
    ax.set_xlabel("effect measured on held-out queries")
    ax.set_ylabel("predicted effect")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _table(rows: list[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return "<p><em>none</em></p>"
    cols = list(columns or rows[0].keys())
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{v:.4g}"
    return "" if v is None else str(v)


_CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;font-size:13px;margin:0.5em 0}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}"
        "img{max-width:100%;border:1px solid #eee}")


def write_report(out_dir: str | Path, data: ReportData) -> Path:
    """Write ``report.html`` and its PNG plots under ``out_dir/plots``; returns the HTML path."""
    out = Path(out_dir)
    plots = out / "plots"
    parts = [f"<h1>{html.escape(data.title)}</h1>", "<h2>Summary</h2>",
             _table([{"item": k, "value": v} for k, v in data.summary.items()])]
    parts += [f"<p>{html.escape(n)}</p>" for n in data.notes]
    parts += ["<h2>Causal model diagnostics</h2>",
              f"<pre>{html.escape(data.diagnostics)}</pre>" if data.diagnostics else "<p><em>not available</em></p>"]
    sections = [
        ("Prompt effects", data.prompt_effects, plot_prompt_effects, "prompt_effects.png"),
        ("Policy value vs baselines (held-out queries)", data.policy_values, plot_policy_values, "policy_value.png"),
        ("Uplift by query difficulty tier", data.tiers, plot_tiers, "uplift_by_tier.png"),
        ("Causal vs non-causal model", data.comparison, plot_comparison, "causal_vs_noncausal.png"),
    ]
    for title, payload, plot, name in sections:
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if payload:
            plot(payload, plots / name)
            parts.append(f'<img src="plots/{name}" alt="{html.escape(title)}">')
        else:
            parts.append("<p><em>not available for this run</em></p>")
    if data.tiers:
        parts.append(_table(data.tiers))
    parts += ["<h2>Top candidates (generative search)</h2>", _table(data.top_candidates),
              "<h2>Search trace</h2>", _table(data.trace)]
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(data.title)}</title>" \
           f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>"
    return atomic_write_text(out / "report.html", page)


__all__ = ["Interval", "ReportData", "write_report", "plot_prompt_effects", "plot_policy_values", "plot_tiers",
           "plot_comparison"]
