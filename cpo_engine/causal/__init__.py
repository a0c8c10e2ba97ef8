"""Causal reward model: cross-fitted DML (CPO, arXiv 2602.01711), nuisances, diagnostics, the
non-causal baseline, the econml forest delegate and the evaluation harness.

Names are imported on first use (PEP 562), so ``cpo_engine.causal.config`` stays light for the CLI.
"""

from __future__ import annotations

from cpo_engine.utils import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "baseline": ("OutcomeRewardModel",),
    "config": ("CausalConfig",),
    "diagnostics": ("CausalDiagnosticWarning", "FitDiagnostics"),
    "dml": ("CausalRewardModel", "load_model"),
    "evaluation": ("EvaluationConfig",),
    "evidence": ("ESTIMATED", "MEASURED", "PREDICTED", "LabelledValue"),
    "featurize": ("Featurizer",),
    "forest": ("CausalForestRewardModel",),
    "harness": ("evaluate", "write_evaluation"),
    "head": ("LinearHead",),
    "nuisances": ("make_nuisance", "nuisance_names"),
    "nuisances.mlp": ("TorchMLP",),
    "nuisances.ridge": ("TorchRidge",),
    "persist": ("representation_provenance",),
})
