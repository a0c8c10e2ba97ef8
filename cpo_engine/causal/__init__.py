"""Causal reward model: cross-fitted DML (CPO, arXiv 2602.01711), nuisances, diagnostics, the
non-causal baseline, the econml forest delegate and the evaluation harness."""

from cpo_engine.causal.baseline import OutcomeRewardModel
from cpo_engine.causal.diagnostics import CausalDiagnosticWarning, FitDiagnostics
from cpo_engine.causal.dml import CausalRewardModel
from cpo_engine.causal.evaluation import EvaluationConfig
from cpo_engine.causal.featurize import Featurizer
from cpo_engine.causal.forest import CausalForestRewardModel
from cpo_engine.causal.harness import evaluate, write_evaluation
from cpo_engine.causal.head import LinearHead
from cpo_engine.causal.nuisance import TorchMLP, TorchRidge, make_nuisance
from cpo_engine.causal.persist import load_model, representation_provenance

__all__ = ["CausalRewardModel", "OutcomeRewardModel", "CausalForestRewardModel", "LinearHead",
           "Featurizer", "TorchRidge", "TorchMLP", "make_nuisance", "FitDiagnostics",
           "CausalDiagnosticWarning", "EvaluationConfig", "evaluate", "write_evaluation", "load_model",
           "representation_provenance"]
