"""The learned policy: the model bundle a fit writes (:class:`ModelBundle`), the policy applied to new
queries (:class:`Policy`, its configuration :class:`PolicyConfig`) and the encoder + cache + PCAs texts go
through (:class:`Representer`). A library room: it composes data, embedding, causal and search (the one
per-query selection rule is :func:`cpo_engine.search.select.select_per_query`) and never imports
orchestration (:mod:`cpo_engine.workflows`), so ``from cpo_engine import Policy`` stays a library import.

Names are imported on first use (PEP 562), so ``cpo_engine.policy.config`` stays light for the CLI.
"""

from __future__ import annotations

from cpo_engine.utils import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "bundle": ("ModelBundle", "save_bundle"),
    "config": ("PolicyConfig",),
    "policy": ("ASSIGNMENT_COLUMNS", "Policy", "PolicyState", "UnreliablePolicyWarning"),
    "represent": ("Representer",),
})
