"""cpo_engine: a batch engine for Causal Prompt Optimization (arXiv 2602.01711).

Stages: triplet data -> representations (embeddings + PCA) -> causal reward model (cross-fitted
DML) -> offline-guided batched search; generation builds triplets with LLMs, edit analysis explains
which prompt edits help on which task. Orchestration lives in :mod:`cpo_engine.workflows`.

The public API is importable from the top (each name is imported on first use, so ``import
cpo_engine`` stays light)::

    from cpo_engine import Policy
    policy = Policy.load("runs/mine")                 # a `cpo run` / `cpo fit` folder or its model/
    policy.assign(["A train goes 60 km in 1 hour. How far in 3 hours?"]).to_pandas()

Every table argument takes a pandas DataFrame, a pyarrow Table or a path (``FitConfig(data=df)`` too); in
memory, with no file written::

    from cpo_engine import fit_policy
    policy = fit_policy(df)                           # df: query_id, query_text, prompt_id, prompt_text, score
    policy.assign(new_queries_df).to_pandas()         # query_id, query_text
    policy.model.prompt_effects().to_pandas()         # each prompt's average effect, se, 95% CI

Importing the package sets no environment variable: the CLI and the Ray Jobs entrypoints set the
offline and threading defaults for their own process (:func:`cpo_engine.utils.process_defaults`).
"""

from __future__ import annotations

from cpo_engine.utils import lazy_exports

__version__ = "0.1.0"

_getattr, _dir, _names = lazy_exports(__name__, {
    "causal.baseline": ("OutcomeRewardModel",),
    "causal.diagnostics": ("CausalDiagnosticWarning",),
    "causal.dml": ("CausalRewardModel",),
    "data.example": ("example_path", "load_example"),
    "data.validate": ("read_triplets", "validate_triplets"),
    "data.queries": ("read_queries",),
    "embedding.representations": ("build_representations",),
    "exceptions": ("CPOError", "ConfigError", "DataError", "DataWarning"),
    "workflows.assign": ("assign",),
    "policy.bundle": ("ModelBundle",),
    "settings": ("AssignConfig", "FitConfig", "OptimizeConfig", "RunConfig"),
    "workflows.fit": ("fit", "fit_policy"),
    "workflows.optimize": ("optimize",),
    "policy.policy": ("Policy", "UnreliablePolicyWarning"),
    "workflows.run": ("run",),
})
__all__ = ["__version__", *_names]


def __getattr__(name: str) -> object:
    return _getattr(name)


def __dir__() -> list[str]:
    return sorted(__all__)
