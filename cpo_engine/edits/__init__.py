"""Edit-level causal analysis (arXiv 2605.26655): which prompt edits help on which task.

From pairs of prompts (parent -> child, or every ordered pair scored on the same queries) the edit
is represented three ways (edit families, surface changes, text-diff motifs); effects on the paired
score change are estimated per family x task (x model) by cross-fitted DML with query-clustered
intervals, Benjamini-Hochberg FDR control and a heterogeneity test across tasks; the results become
an edit prior that weights the edit-operator proposer per task.

Typical use::

    from cpo_engine.edits import analyze, write_report
    report, prior = analyze("triplets.parquet")
    write_report(report, prior, "runs/edits")

Names are imported on first use (PEP 562), so ``cpo_engine.edits.config`` (the settings `cpo edits`'
flags are generated from) stays light: it imports neither pandas nor numpy.
"""

from __future__ import annotations

from cpo_engine.utils import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "analysis": ("EditReport", "analyze_edits", "heterogeneity"),
    "config": ("EffectConfig", "PairConfig", "PriorConfig"),
    "estimate": ("PairedEditDML", "bh_qvalues", "cochran_q"),
    "extract": ("EditRecord", "describe_edits", "diff_spans", "extract_edit", "surface_features"),
    "families": ("DetectorConfig", "edit_families", "family_counts", "family_presence"),
    "pairs": ("PairedUnits", "read_trajectories", "units_from_trajectories", "units_from_triplets"),
    "prior": ("PRIOR_FORMAT", "default_prior_path", "edit_prior", "load_edit_prior", "prior_weights",
              "validate_edit_prior"),
    "report": ("write_report",),
    "run": ("analyze", "load_units"),
})
