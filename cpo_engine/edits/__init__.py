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
"""

from __future__ import annotations

from cpo_engine.edits.analysis import EditReport, EffectConfig, analyze_edits, heterogeneity
from cpo_engine.edits.estimate import PairedEditDML, bh_qvalues, cochran_q
from cpo_engine.edits.extract import EditRecord, describe_edits, diff_spans, extract_edit, surface_features
from cpo_engine.edits.families import DetectorConfig, edit_families, family_counts, family_presence
from cpo_engine.edits.pairs import (
    PairConfig,
    PairedUnits,
    read_trajectories,
    units_from_trajectories,
    units_from_triplets,
)
from cpo_engine.edits.prior import (
    PRIOR_FORMAT,
    PriorConfig,
    default_prior_path,
    edit_prior,
    load_edit_prior,
    prior_weights,
    validate_edit_prior,
)
from cpo_engine.edits.run import analyze, load_units
from cpo_engine.edits.report import write_report

__all__ = [
    "PRIOR_FORMAT",
    "DetectorConfig",
    "EditRecord",
    "EditReport",
    "EffectConfig",
    "PairConfig",
    "PairedEditDML",
    "PairedUnits",
    "PriorConfig",
    "analyze",
    "analyze_edits",
    "bh_qvalues",
    "cochran_q",
    "default_prior_path",
    "describe_edits",
    "diff_spans",
    "edit_families",
    "edit_prior",
    "extract_edit",
    "family_counts",
    "family_presence",
    "heterogeneity",
    "load_edit_prior",
    "load_units",
    "prior_weights",
    "read_trajectories",
    "surface_features",
    "units_from_trajectories",
    "units_from_triplets",
    "validate_edit_prior",
    "write_report",
]
