"""Write an :class:`~cpo_engine.edits.analysis.EditReport`: CSV + markdown tables, heatmap, edit prior.

Every file is written through :mod:`cpo_engine.utils` atomic helpers (temp file, then rename), so a
reader never sees a half-written output.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cpo_engine.edits.analysis import EditReport
from cpo_engine.taxonomy import EDIT_FAMILIES
from cpo_engine.utils import atomic_write_bytes, atomic_write_json, atomic_write_text

OUTPUT_FILES: dict[str, str] = {
    "families_csv": "edit_effects.csv",
    "families_md": "edit_effects.md",
    "surface_csv": "surface_effects.csv",
    "motifs_csv": "motif_effects.csv",
    "heterogeneity_csv": "heterogeneity.csv",
    "heatmap": "edit_heatmap.png",
    "prior": "edit_prior.json",
    "summary": "summary.json",
}


def _fmt(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else ""
    if isinstance(v, (float, np.floating)):
        return "" if not np.isfinite(v) else (f"{v:.2e}" if 0 < abs(v) < 1e-3 else f"{v:.4f}")
    return str(v)


def markdown_table(df: pd.DataFrame, columns: list[str]) -> str:
    """A GitHub-markdown table of ``columns`` of ``df`` (numbers to 4 decimals)."""
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    body = "".join("| " + " | ".join(_fmt(v) for v in row) + " |\n" for row in df[columns].itertuples(index=False))
    return head + body


def _cell_label(task: str, model: str, models: int) -> str:
    return task if models <= 1 else f"{task} | {model}"


def _mark(q: float) -> str:
    if not np.isfinite(q):
        return ""
    return "***" if q <= 0.001 else "**" if q <= 0.01 else "*" if q <= 0.05 else ""


def heatmap_png(families: pd.DataFrame, fdr: float = 0.05) -> bytes:
    """Families x tasks heatmap of effects (diverging colours), BH significance stars, n/a cells grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_models = families["model"].nunique()
    families = families.assign(cell=[_cell_label(t, m, n_models) for t, m in zip(families["task"], families["model"])])
    cells = sorted(families["cell"].unique())
    fams = list(EDIT_FAMILIES)
    eff = families.pivot_table(index="family", columns="cell", values="effect", aggfunc="first").reindex(
        index=fams, columns=cells)
    qv = families.pivot_table(index="family", columns="cell", values="q_value", aggfunc="first").reindex(
        index=fams, columns=cells)
    vmax = float(np.nanmax(np.abs(eff.to_numpy()))) if np.isfinite(eff.to_numpy()).any() else 1.0
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(cells), 0.5 * len(fams) + 1.6))
    cmap = matplotlib.colormaps["RdBu"].with_extremes(bad="#dddddd")
    im = ax.imshow(np.ma.masked_invalid(eff.to_numpy(dtype=float)), cmap=cmap, vmin=-vmax, vmax=vmax, aspect="auto")
    for i in range(len(fams)):
        for j in range(len(cells)):
            v, q = eff.iat[i, j], qv.iat[i, j]
            txt = "n/a" if not np.isfinite(v) else f"{v:+.3f}{_mark(q)}"
            dark = np.isfinite(v) and abs(v) > 0.6 * vmax
            ax.text(j, i, txt, ha="center", va="center", fontsize=8, color="white" if dark else "black")
    ax.set_xticks(range(len(cells)), cells, rotation=30, ha="right")
    ax.set_yticks(range(len(fams)), fams)
    ax.set_title(f"Effect of adding an edit family on the score (paired DML)\n"
                 f"BH q-values: * <= {fdr:g}, ** <= .01, *** <= .001; grey: not estimated", fontsize=9)
    fig.colorbar(im, ax=ax, label="change in score")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()


_FAM_COLS = ["task", "model", "family", "effect", "ci_low", "ci_high", "q_value", "significant", "n_edits",
             "n_prompts", "status"]


def markdown_report(report: EditReport, source: str) -> str:
    """The human-readable report: family table (estimated rows), heterogeneity, top motifs."""
    fam = report.families
    est = fam[fam["status"] == "estimated"]
    lines = [f"# Edit-level analysis of {source}\n",
             f"{report.config.get('n_edits')} edits, {report.config.get('n_units')} paired units, "
             f"{report.config.get('n_queries')} queries; inference: {report.config.get('inference')}, "
             f"BH FDR {report.config.get('fdr')} over {len(est)} family x cell tests (surface changes, motifs "
             "and heterogeneity tests are separate BH families); jackknife p-values and intervals use t "
             "quantiles with (prompts - 1) degrees of freedom (column df).\n",
             "## Edit families\n", markdown_table(est, _FAM_COLS)]
    other = fam[fam["status"] != "estimated"]
    if len(other):
        lines += ["\nNot estimated:\n", markdown_table(other, ["task", "model", "family", "n_edits", "status"])]
    lines += ["\n## Heterogeneity across tasks (Cochran's Q)\n",
              markdown_table(report.heterogeneity, ["family", "model", "n_tasks", "Q", "df", "p_value", "q_value",
                                                    "I2", "pooled", "pooled_se"])]
    srf = report.surface[report.surface["status"] == "estimated"]
    lines += ["\n## Surface changes (per 10 words, sentence, imperative, 10 reading-ease points)\n",
              markdown_table(srf, ["task", "model", "feature", "effect", "ci_low", "ci_high", "q_value",
                                   "significant"])]
    if len(report.motifs):
        top = report.motifs[report.motifs["significant"]].sort_values("q_value").head(20)
        lines += ["\n## Motifs (marginal effect of inserting the n-gram; significant, top 20)\n",
                  markdown_table(top, ["task", "model", "motif", "effect", "ci_low", "ci_high", "q_value", "n_edits",
                                       "n_prompts"])]
    return "\n".join(lines)


def write_report(report: EditReport, prior: dict[str, Any], out_dir: str | os.PathLike[str],
                 source: str = "<data>", extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write every output of ``cpo edits`` into ``out_dir`` (atomically); returns name -> path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / v for k, v in OUTPUT_FILES.items()}
    csv = {"families_csv": report.families, "surface_csv": report.surface, "motifs_csv": report.motifs,
           "heterogeneity_csv": report.heterogeneity}
    for key, df in csv.items():
        atomic_write_text(paths[key], df.to_csv(index=False))
    atomic_write_text(paths["families_md"], markdown_report(report, source))
    atomic_write_bytes(paths["heatmap"], heatmap_png(report.families, float(report.config.get("fdr", 0.05))))
    atomic_write_json(paths["prior"], prior)
    summary = {"source": source, "config": report.config, "outputs": {k: p.name for k, p in paths.items()},
               "n_estimated": int((report.families["status"] == "estimated").sum()),
               "n_significant": int(report.families["significant"].sum()), **(extra or {})}
    atomic_write_json(paths["summary"], summary)
    return paths


__all__ = ["OUTPUT_FILES", "heatmap_png", "markdown_report", "markdown_table", "write_report"]
