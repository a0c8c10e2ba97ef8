"""The docstring examples of the public API run as doctests (econml's dml.py style): the causal reward
model, the policy (DataFrame -> Policy in memory), the OPE entry point, and the table boundary."""

from __future__ import annotations

import doctest
import importlib
import warnings

import pytest

MODULES = [
    "cpo_engine.causal.dml",  # CausalRewardModel: fit, prompt_effects, effect, clone
    "cpo_engine.policy.policy",  # Policy: fit_policy on a DataFrame, assign, prompt effects (embeds with MiniLM)
    "cpo_engine.causal.ope",  # estimate_policy_value on synthetic bandit logs with a known truth
    "cpo_engine.data.io",  # as_table: a DataFrame at the boundary
    "cpo_engine.data.validate",  # validate_triplets(df)
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    with warnings.catch_warnings():  # the examples' small data trip the engine's own warnings: not their subject
        warnings.simplefilter("ignore")
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS,
                                 raise_on_error=False, report=True, verbose=False)
    assert result.attempted > 0, f"{name} has no docstring examples"
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples of {name} failed (see above)"
