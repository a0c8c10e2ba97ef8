"""Workflows: orchestration, the one room that composes the library rooms.

Each workflow is a function from a config (:mod:`cpo_engine.settings`) to a run folder and a
small typed result; `commands/` and the Ray Jobs entrypoints (`jobs/`) only turn flags into a config
and call one of them. No library room imports this one (docs/ARCHITECTURE.md). The workflow functions
are named after their modules: ``from cpo_engine.workflows.run import run`` (likewise ``fit``,
``optimize``, ``evaluate``; ``nightly.run_nightly``).
"""

from __future__ import annotations

from cpo_engine.utils import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    # the model bundle and the policy live in the policy room (cpo_engine.policy); kept here for old imports
    "cpo_engine.policy.bundle": ("ModelBundle", "save_bundle"),
    "cpo_engine.policy.policy": ("Policy",),
    "cpo_engine.settings": ("DriftConfig", "EvaluateConfig", "FitConfig", "GateConfig", "HoldoutConfig", "NightlyConfig",
               "OffPolicyConfig", "OptimizeConfig", "RunConfig"),
    "evaluate": ("EvaluateResult",),
    "fit": ("FitResult",),
    "nightly": ("NightlyResult", "run_nightly"),
    "optimize": ("OptimizeResult",),
    "run": ("RunResult",),
})
