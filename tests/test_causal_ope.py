"""Off-policy estimators: hand-computed values on a tiny table, truth on a simulated bandit, interval
coverage, overlap diagnostics and bounds, the cross-fitted propensity model, the evidence labels."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import t as student_t

from cpo_engine.causal.evidence import ESTIMATED, MEASURED, PREDICTED, LabelledValue, evidence_kind
from cpo_engine.causal.ope import (
    BanditLogs,
    OPEConfig,
    OverlapWarning,
    estimate_policy_value,
    on_policy_value,
    paired_difference,
    policy_matrix,
)
from cpo_engine.causal.policy_values import LOGGING, estimated_policy_values, measured_policy_values
from cpo_engine.causal.propensity import SMOOTHING_GRID, PropensityModel
from cpo_engine.causal.synthetic import bandit_cells, make_bandit
from cpo_engine.exceptions import ConfigError, DataError

# 3 queries, 2 prompts; query 0 has two logged rows
Q = np.array([0, 0, 1, 2])
A = np.array([0, 1, 1, 0])
Y = np.array([1.0, 0.0, 1.0, 0.0])
P = np.array([0.5, 0.5, 0.25, 0.8])
QHAT = np.array([[0.6, 0.4], [0.3, 0.7], [0.2, 0.5]])


def _hand() -> dict[str, np.ndarray]:
    """Per-query influence values of target 'prompt 1 everywhere', computed by hand."""
    # weights w = 1[a == 1] / p: rows -> 0, 2, 4, 0; per query mean: q0 = (0 + 2) / 2 = 1, q1 = 4, q2 = 0
    W = np.array([1.0, 4.0, 0.0])
    Yw = np.array([(0 + 2 * 0.0) / 2, 4 * 1.0, 0.0])
    D = np.array([0.4, 0.7, 0.5])
    Rw = np.array([(0 + 2 * (0.0 - 0.4)) / 2, 4 * (1.0 - 0.7), 0.0])
    snips = Yw.sum() / W.sum()
    corr = Rw.sum() / W.sum()
    return {"ipw": Yw, "dm": D, "dr": D + Rw,
            "snips": snips + (Yw - snips * W) / W.mean(),
            "sndr": D + corr + (Rw - corr * W) / W.mean()}


def test_estimators_match_hand_computed_values_and_intervals():
    est = estimate_policy_value(BanditLogs(Q, A, Y, P), 1, QHAT, OPEConfig(min_propensity=0.01))
    hand = _hand()
    expected = {"ipw": 4 / 3, "dm": 1.6 / 3, "dr": (0.4 - 0.4 + 0.7 + 1.2 + 0.5) / 3,
                "snips": 4 / 5, "sndr": 1.6 / 3 + (0.8 / 3) / (5 / 3)}
    for name, value in expected.items():
        assert est[name].value == pytest.approx(value, abs=1e-12), name
        assert est[name].value == pytest.approx(hand[name].mean(), abs=1e-12), name
        se = hand[name].std(ddof=1) / np.sqrt(3)
        h = student_t.ppf(0.975, 2) * se
        assert (est[name].se, est[name].ci_low, est[name].ci_high) == pytest.approx(
            (se, value - h, value + h), abs=1e-12), name
    assert est["dm"].evidence == PREDICTED and est["dr"].evidence == ESTIMATED
    assert est["dr"].ess == pytest.approx(6.0 ** 2 / 20.0)  # weights 0, 2, 4, 0
    assert est["dr"].n_queries == 3 and est["dr"].n_rows == 4


def test_clipping_caps_weights_and_counts_clipped_rows():
    est = estimate_policy_value(BanditLogs(Q, A, Y, P), 1, QHAT, OPEConfig(min_propensity=0.4), ("ipw",))["ipw"]
    assert est.max_weight == pytest.approx(1 / 0.4)  # the 0.25 propensity is raised to 0.4
    assert est.clipped_share == pytest.approx(0.5)  # of the two rows the target weights, one was clipped


def test_on_policy_value_and_paired_difference():
    logs = BanditLogs(Q, A, Y, P)
    on = on_policy_value(logs)
    assert on.value == pytest.approx((0.5 + 1 + 0) / 3) and on.evidence == MEASURED
    est = estimate_policy_value(logs, 1, QHAT)
    d = paired_difference(est["dr"], on)
    assert d["diff"] == pytest.approx(est["dr"].value - on.value)
    assert d["ci_low"] < d["diff"] < d["ci_high"] and d["n"] == 3
    other = estimate_policy_value(BanditLogs(Q[:3], A[:3], Y[:3], P[:3]), 1, QHAT)["dr"]
    with pytest.raises(DataError, match="same logged queries"):
        paired_difference(est["dr"], other)


def test_policy_matrix_forms_and_errors():
    assert policy_matrix(1, 2, 3).tolist() == [[0, 1, 0], [0, 1, 0]]
    assert policy_matrix(np.array([2, 0]), 2, 3).tolist() == [[0, 0, 1], [1, 0, 0]]
    stoch = np.array([[0.5, 0.5, 0.0], [0.1, 0.2, 0.7]])
    assert np.array_equal(policy_matrix(stoch, 2, 3), stoch)
    with pytest.raises(DataError, match="sum to 1"):
        policy_matrix(np.array([[0.5, 0.4, 0.0], [0.1, 0.2, 0.7]]), 2, 3)
    with pytest.raises(DataError, match="outside"):
        policy_matrix(5, 2, 3)
    with pytest.raises(DataError, match="propensities must be in"):
        BanditLogs(Q, A, Y, np.array([0.5, 0.0, 0.2, 0.1]))
    with pytest.raises(ConfigError, match="min_propensity"):
        OPEConfig(min_propensity=0.0)


def _bandit(rng, n_q=600, k=2, strength=1.5):
    """A simulated bandit, a noisy-argmax target policy and a biased reward model; the truth is the
    target's mean true value over the drawn queries."""
    b = make_bandit(n_q, 5, k, strength, seed=rng)
    target = np.argmax(b.mu + rng.normal(0, 0.1, b.mu.shape), axis=1)
    truth = float(b.mu[np.arange(n_q), target].mean())
    q_hat = np.clip(b.mu + 0.1 * b.x[:, None], 0, 1)
    return BanditLogs(b.q, b.a, b.y, b.pi0[b.q, b.a]), target, q_hat, truth, b.mu, b.pi0


def test_estimators_are_unbiased_on_a_simulated_bandit():
    rng = np.random.default_rng(0)
    errors: dict[str, list[float]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OverlapWarning)
        for _ in range(60):
            logs, target, q_hat, truth, _, _ = _bandit(rng)
            for name, e in estimate_policy_value(logs, target, q_hat, OPEConfig(min_propensity=1e-4)).items():
                errors.setdefault(name, []).append(e.value - truth)
    for name in ("ipw", "snips", "dr", "sndr"):
        err = np.asarray(errors[name])
        assert abs(err.mean()) < 3 * err.std(ddof=1) / np.sqrt(len(err)) + 0.004, name
    assert np.mean(np.abs(errors["dr"])) < np.mean(np.abs(errors["ipw"]))  # the reward model cuts variance


@pytest.mark.parametrize("estimator", ["dr", "snips", "sndr", "ipw"])
def test_interval_coverage_on_a_simulated_bandit(estimator):
    """Each draw of queries is a sample from the population (x ~ N(0, 1)); the 95% interval clustered by
    query must cover the population value about 95% of the time."""
    rng = np.random.default_rng(1)
    pop = float(bandit_cells(np.random.default_rng(99).normal(size=200_000)).max(1).mean())  # population value
    hits, reps = 0, 300
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OverlapWarning)
        for _ in range(reps):
            logs, _, q_hat, _, mu, _ = _bandit(rng, n_q=300)
            target = np.argmax(mu, axis=1)  # the best prompt per query: a fixed function of x
            e = estimate_policy_value(logs, target, q_hat, OPEConfig(min_propensity=1e-4), (estimator,))[estimator]
            hits += e.ci_low <= pop <= e.ci_high
    assert 0.90 <= hits / reps <= 0.98, hits / reps


def test_off_support_choices_warn_and_are_reported_as_bounds():
    rng = np.random.default_rng(2)
    logs, _, q_hat, _, mu, pi0 = _bandit(rng, strength=8.0)  # near-deterministic logging: no overlap
    target = np.argmin(pi0, axis=1)  # the prompt each query was least likely to get
    truth = float(mu[np.arange(len(mu)), target].mean())
    with pytest.warns(OverlapWarning, match="logging propensity < 0.001"):
        est = estimate_policy_value(logs, target, q_hat, OPEConfig(), name="rarely logged", propensity_matrix=pi0,
                                    y_range=(0.0, 1.0))
    dr = est["dr"]
    assert dr.off_support > 0.5 and dr.bounded and dr.warnings and "rarely logged" in dr.warnings[0]
    assert dr.bounds[0] <= truth <= dr.bounds[1]
    assert dr.bounds[1] - dr.bounds[0] >= dr.off_support * 0.99  # the off-support part is only bounded
    labelled = dr.labelled()
    assert (labelled.ci_low, labelled.ci_high) == dr.bounds and "interval = bounds" in labelled.note
    on = on_policy_value(logs)
    d = paired_difference(dr, on)
    assert d["bounded"] and d["ci_high"] - d["ci_low"] >= dr.off_support * 0.99
    supported = estimate_policy_value(logs, np.argmax(pi0, axis=1), q_hat, propensity_matrix=pi0)["dr"]
    assert supported.off_support == 0 and not supported.bounded and supported.reported == (supported.ci_low,
                                                                                           supported.ci_high)


def test_propensity_model_recovers_a_known_policy_on_the_dml_folds():
    from cpo_engine.causal import CausalRewardModel

    rng = np.random.default_rng(3)
    n_q, n_p, k = 400, 4, 3
    X = rng.normal(size=(n_q, 3))
    logit = X @ rng.normal(size=(3, n_p))
    pi0 = np.exp(logit) / np.exp(logit).sum(1, keepdims=True)
    q = np.repeat(np.arange(n_q), k)
    a = (pi0[q].cumsum(1) < rng.random(len(q))[:, None]).sum(1)
    T = np.eye(n_p)[:, : n_p - 1]
    y = rng.normal(size=len(q)) + T[a] @ np.array([0.3, -0.2, 0.1])
    causal = CausalRewardModel(cv=3, random_state=0).fit(y, T[a], X=X[q], groups=q)
    model = PropensityModel(cv=3, random_state=0).fit(X[q], a, n_prompts=n_p, folds=causal.folds_)
    assert model.folds_ is causal.folds_
    assert model.oof_.shape == (len(q), n_p) and np.allclose(model.oof_.sum(1), 1)
    for train, test in causal.folds_:  # a row's propensity comes from a model that never saw its query
        assert not set(q[train]) & set(q[test])
    corr = np.corrcoef(np.log(model.logged_propensity()), np.log(pi0[q, a]))[0, 1]
    assert corr > 0.9
    same = PropensityModel(cv=3, random_state=0).fit(X[q], a, n_prompts=n_p, groups=q)
    assert all(np.array_equal(f[1], g[1]) for f, g in zip(same.folds_, causal.folds_))  # same folds by construction
    diag = model.diagnostics()
    assert diag["log_loss"] < diag["log_loss_marginal"] and diag["smoothing"] in SMOOTHING_GRID
    assert model.predict_proba(X[:5]).shape == (5, n_p)


def test_policy_values_measured_vs_estimated_and_labels():
    rng = np.random.default_rng(4)
    logs, target, q_hat, _, mu, pi0 = _bandit(rng, n_q=200)
    values = estimated_policy_values(logs, {"per query": target, "static 0": 0}, q_hat,
                                     propensity_matrix=pi0, static_name="static 0")
    assert values.evidence == ESTIMATED and "doubly robust" in values.method
    labelled = values.labelled()
    assert labelled[LOGGING].evidence == MEASURED and labelled["per query"].evidence == ESTIMATED
    assert set(values.vs_logging) == {"per query", "static 0"} and set(values.vs_static) == {"per query", LOGGING}
    d = values.to_dict()
    assert d["values"]["per query"]["kind"] == "estimated" and "dm" in d["estimators"]["per query"]
    assert any("vs logging policy" in line for line in values.lines())
    measured = measured_policy_values(mu, {"per query": target, "static 0": 0}, mu.mean(1), "static 0")
    assert measured.evidence == MEASURED
    assert measured.estimates["per query"].value == pytest.approx(mu[np.arange(200), target].mean())
    assert measured.vs_static["per query"]["diff"] > 0
    no_model = estimated_policy_values(logs, {"per query": target}, None)
    assert no_model.estimates["per query"].estimator == "snips"


def test_evidence_labels():
    assert [evidence_kind(x) for x in (MEASURED, ESTIMATED, PREDICTED)] == ["measured", "estimated", "predicted"]
    v = LabelledValue(0.6, 0.55, 0.65, ESTIMATED, "doubly robust", n=10)
    assert v.kind == "estimated" and "estimated, doubly robust" in v.describe()
    assert v.to_dict()["kind"] == "estimated"
    assert LabelledValue(float("nan"), None, None, PREDICTED).to_dict()["value"] is None
    with pytest.raises(ValueError, match="evidence must be one of"):
        LabelledValue(0.5, 0.4, 0.6, "guessed")


def test_propensity_smoothing_recovers_an_exploration_floor():
    """A router that explores uniformly: the chosen uniform mix puts the floor back under the logistic fit."""
    rng = np.random.default_rng(6)
    n_q, n_p = 3000, 4
    X = rng.normal(size=(n_q, 2))
    logit = 4 * X @ rng.normal(size=(2, n_p))
    greedy = np.exp(logit - logit.max(1, keepdims=True))
    pi0 = 0.7 * greedy / greedy.sum(1, keepdims=True) + 0.3 / n_p
    a = (pi0.cumsum(1) < rng.random(n_q)[:, None]).sum(1)
    q = np.arange(n_q)
    model = PropensityModel(cv=3).fit(X, a, n_prompts=n_p, groups=q)
    assert model.smoothing_ > 0  # the uniform mix fits the held-out rows better than the logistic alone
    assert model.oof_.min() >= model.smoothing_ / n_p - 1e-12
    plain = PropensityModel(cv=3).fit(X, np.argmax(logit, axis=1), n_prompts=n_p, groups=q)  # no exploration
    assert plain.smoothing_ <= 0.01


def test_logged_propensities_are_not_clipped_at_the_estimated_floor():
    """A logging policy with 16 prompts and 10% uniform exploration logs a prompt it disfavours with
    probability 0.00625: the logs' own propensities are true, so they are used as they are (floor
    ``min_logged_propensity``), where a model's floor of 0.01 would shrink those rows' weights by 0.625 and
    bias the value of exactly that prompt (a held-out DR interval once missed the truth this way)."""
    rng = np.random.default_rng(7)
    n = 100_000
    rare = np.arange(n) < n // 2  # on these queries prompt 0 is logged with probability 0.1 / 16
    p0 = np.where(rare, 0.1 / 16, 0.3)
    a = np.where(rng.random(n) < p0, 0, 1)
    y = (rng.random(n) < np.where(rare, 0.8, 0.2)).astype(float)  # prompt 0's true value: 0.5
    y[a == 1] = (rng.random(int((a == 1).sum())) < 0.5).astype(float)
    p = np.where(a == 0, p0, 1 - p0)
    q = np.arange(n)
    logged = estimate_policy_value(BanditLogs(q, a, y, p, logged=True), 0, estimators=("ipw",))["ipw"]
    assert logged.floor == OPEConfig().min_logged_propensity and logged.clipped_share == 0.0
    assert logged.ci_low <= 0.5 <= logged.ci_high, (logged.value, logged.ci_low, logged.ci_high)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OverlapWarning)
        modelled = estimate_policy_value(BanditLogs(q, a, y, p), 0, estimators=("ipw",))["ipw"]
    assert modelled.floor == OPEConfig().min_propensity and modelled.clipped_share > 0.01
    assert modelled.ci_high < 0.5  # what the estimated-propensity floor does to true propensities
    with pytest.raises(ConfigError, match="min_logged_propensity"):
        OPEConfig(min_logged_propensity=0.0)


def test_propensity_one_on_every_row_puts_other_choices_off_support_and_values_stay_in_range():
    """`cpo ope` with propensity 1.0 on every row while 4 prompts were logged reported 0% off support and a tight
    interval, and a value below 0 for a 0/1 score. Propensity 1.0 says the logging policy could choose nothing
    else for that query: a target that chooses another prompt there is off support (bounded), whatever a fitted
    propensity model guesses; reported values stay inside the score's range."""
    rng = np.random.default_rng(3)
    n, k = 400, 4
    q = np.arange(n)
    a = rng.integers(0, k, n)
    y = (rng.random(n) < 0.5).astype(float)
    P_model = np.full((n, k), 1.0 / k)  # what a propensity model fitted on these logs says
    target = (a + 1) % k  # never the logged prompt
    logged = BanditLogs(q, a, y, np.ones(n), logged=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OverlapWarning)
        est = estimate_policy_value(logged, target, None, propensity_matrix=P_model, y_range=(0.0, 1.0))["ipw"]
        naive = estimate_policy_value(BanditLogs(q, a, y, np.ones(n)), target, None, propensity_matrix=P_model,
                                      y_range=(0.0, 1.0))["ipw"]
    assert est.off_support == 1.0 and est.bounded and est.reported == (0.0, 1.0)
    assert naive.off_support == 0.0  # without the logs' own propensities the model's guess is all there is
    q_hat = np.full((n, k), -0.3)  # a reward model that extrapolates below the score's range
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OverlapWarning)
        dm = estimate_policy_value(BanditLogs(q, a, y, np.full(n, 0.25)), target, q_hat, y_range=(0.0, 1.0),
                                   estimators=("dm",))["dm"]
    assert dm.value == 0.0 and dm.ci_low >= 0.0 and any("outside the score's range" in w for w in dm.warnings)


def test_ipw_and_dr_far_apart_get_a_warning_on_the_headline():
    """`cpo ope` printed IPW 0.117 beside DR 0.673 without comment. Wrong propensities (1.0 where the logging
    policy chose among 4 prompts) make the two disagree far beyond their noise: the headline says so."""
    rng = np.random.default_rng(5)
    n, k = 2000, 4
    q, a = np.arange(n), rng.integers(0, k, n)
    y = (rng.random(n) < 0.7).astype(float)
    q_hat = np.full((n, k), 0.7)
    values = estimated_policy_values(BanditLogs(q, a, y, np.ones(n), logged=True), {"static 0": 0}, q_hat)
    assert any("disagree far beyond their noise" in w for w in values.estimates["static 0"].warnings)
    right = estimated_policy_values(BanditLogs(q, a, y, np.full(n, 0.25), logged=True), {"static 0": 0}, q_hat)
    assert not any("disagree" in w for w in right.estimates["static 0"].warnings)
