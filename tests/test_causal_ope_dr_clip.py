"""The ``dr_clip`` estimator, a plugin of one file (cpo_engine/causal/ope_estimators/dr_clip.py), and the OPE
estimator registry that makes it so: ``ope.estimator`` validation, ``cpo ope --estimator`` choices and help, and
the policy-value headline all come from the registry, and no other file of the package names it."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import pytest

from cpo_engine.causal.evidence import ESTIMATED
from cpo_engine.causal.ope import BanditLogs, OPEConfig, OverlapWarning, estimate_policy_value
from cpo_engine.causal.ope_estimators import (estimator_names, estimator_spec, register_estimator,
                                              unregister_estimator)
from cpo_engine.causal.ope_estimators.dr_clip import CLIP
from cpo_engine.causal.policy_values import estimated_policy_values
from cpo_engine.causal.synthetic import make_bandit
from cpo_engine.cli import build_parser
from cpo_engine.exceptions import ConfigError

PACKAGE = Path(__file__).resolve().parents[1] / "cpo_engine"

# 3 queries, 2 prompts; target: prompt 1 everywhere. Row weights 1[a == 1] / p = 0, 100, 4, 0 (p floored at 0.01):
# the 100 is clipped to CLIP = 20.
Q = np.array([0, 0, 1, 2])
A = np.array([0, 1, 1, 0])
Y = np.array([1.0, 0.0, 1.0, 0.0])
P = np.array([0.5, 0.001, 0.25, 0.8])
QHAT = np.array([[0.6, 0.4], [0.3, 0.7], [0.2, 0.5]])


def _estimator_action() -> argparse.Action:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return next(a for a in sub.choices["ope"]._actions if a.dest == "estimator")


def test_matches_hand_computed_values_and_equals_dr_without_heavy_weights():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OverlapWarning)
        est = estimate_policy_value(BanditLogs(Q, A, Y, P), 1, QHAT, OPEConfig(), ("dr", "dr_clip"))
    assert CLIP == 20.0
    D = np.array([0.4, 0.7, 0.5])
    clipped = D + np.array([(0 + CLIP * (0.0 - 0.4)) / 2, 4 * (1.0 - 0.7), 0.0])
    full = D + np.array([(0 + 100 * (0.0 - 0.4)) / 2, 4 * (1.0 - 0.7), 0.0])
    assert est["dr_clip"].value == pytest.approx(clipped.mean(), abs=1e-12)
    assert est["dr_clip"].se == pytest.approx(clipped.std(ddof=1) / np.sqrt(3), abs=1e-12)
    assert est["dr"].value == pytest.approx(full.mean(), abs=1e-12)
    assert est["dr_clip"].se < est["dr"].se  # the clipped weight bounds the correction's variance
    assert est["dr_clip"].ess == est["dr"].ess  # diagnostics are those of the logs' own weights
    assert est["dr_clip"].evidence == ESTIMATED
    assert est["dr_clip"].labelled().method == "doubly robust, weights clipped at 20"

    light = BanditLogs(Q, A, Y, np.array([0.5, 0.5, 0.25, 0.8]))  # largest weight 4 < CLIP: the same as DR
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OverlapWarning)
        same = estimate_policy_value(light, 1, QHAT, estimators=("dr", "dr_clip"))
        no_model = estimate_policy_value(light, 1, None, estimators=("ipw", "dr_clip"))
    assert same["dr_clip"].value == pytest.approx(same["dr"].value, abs=1e-12)
    assert set(no_model) == {"ipw"}  # it needs a reward model


def test_registered_not_default_and_valid_as_the_headline():
    spec = estimator_spec("dr_clip")
    assert spec.needs_reward_model and spec.weighted and not spec.default
    assert "dr_clip" in estimator_names() and "dr_clip" not in estimator_names(default=True)
    assert estimator_names(default=True) == ("dm", "ipw", "snips", "dr", "sndr")
    assert OPEConfig(estimator="dr_clip").estimator == "dr_clip"
    with pytest.raises(ConfigError, match="did you mean 'dr_clip'"):
        OPEConfig(estimator="dr_clp")

    b = make_bandit(300, 5, 2, 1.5, seed=np.random.default_rng(3))
    logs = BanditLogs(b.q, b.a, b.y, b.pi0[b.q, b.a])
    target = np.argmax(b.mu, axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OverlapWarning)
        values = estimated_policy_values(logs, {"per query": target}, np.clip(b.mu, 0, 1),
                                         OPEConfig(estimator="dr_clip"))
        no_model = estimated_policy_values(logs, {"per query": target}, None, OPEConfig(estimator="dr_clip"))
    assert values.estimates["per query"].estimator == "dr_clip" and "clipped at 20" in values.method
    assert set(values.all_estimates["per query"]) == {"dm", "ipw", "snips", "dr", "sndr", "dr_clip"}
    assert no_model.estimates["per query"].estimator == "snips"  # no reward model: the SNIPS fallback


def test_in_the_cli_choices_and_help():
    action = _estimator_action()
    assert "dr_clip" in action.choices and "dr_clip: doubly robust, weights clipped at 20" in action.help
    args = build_parser().parse_args(["ope", "--estimator", "dr_clip"])
    assert args.estimator == "dr_clip"


def test_the_plugin_is_one_file():
    named = sorted(str(f.relative_to(PACKAGE)) for f in PACKAGE.rglob("*.py") if "dr_clip" in f.read_text("utf-8"))
    assert named == ["causal/ope_estimators/dr_clip.py"]


def test_an_estimator_registered_from_outside_is_computed_and_validated():
    @register_estimator("half_ipw_test", label="half of IPW")
    def half(rows):  # noqa: ANN001, ANN202
        return rows.Yw / 2

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OverlapWarning)
            est = estimate_policy_value(BanditLogs(Q, A, Y, P), 1, None, estimators=("ipw", "half_ipw_test"))
        assert est["half_ipw_test"].value == pytest.approx(est["ipw"].value / 2)
        assert "half_ipw_test" in _estimator_action().choices
        assert OPEConfig(estimator="half_ipw_test").estimator == "half_ipw_test"
    finally:
        unregister_estimator("half_ipw_test")
    with pytest.raises(ConfigError, match="unknown OPE estimator"):
        estimate_policy_value(BanditLogs(Q, A, Y, P), 1, None, estimators=("half_ipw_test",))
