"""Pool mode on a small hand-built grid: the choice, its value, the interval, outcome matrices."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from cpo_engine.causal.head import LinearHead
from cpo_engine.exceptions import DataError
from cpo_engine.search import CandidateScorer, by_tier, evaluate_choice, outcome_matrix, paired_interval, pool_assign


def _grid_head() -> LinearHead:
    # one query feature x, two prompt dims; effect(q, c) = (1 * T0 + x * T1) . (T_c - 0)
    return LinearHead(coef=np.array([[1.0, 0.0], [0.0, 1.0]]), cov=np.eye(4) * 1e-4,
                      featurize=lambda X: np.hstack([np.ones((len(X), 1)), X]), t_ref=np.zeros(2))


def test_pool_choice_on_hand_built_grid() -> None:
    X = np.array([[-2.0], [-0.5], [0.5], [2.0]])
    T_pool = np.array([[0.0, 0.0], [0.1, 1.0], [0.1, -1.0]])
    scorer = CandidateScorer(_grid_head(), X, embed=lambda ts: None, z=0.0, device="cpu")
    pol = pool_assign(scorer, ["p0", "p1", "p2"], ["a", "b", "c"], T_pool=T_pool)
    # effects: p0 = 0; p1 = 0.1 + x; p2 = 0.1 - x
    np.testing.assert_allclose(pol.effect[:, 1], 0.1 + X[:, 0])
    assert pol.chosen_ids == ["p2", "p2", "p1", "p1"]
    Y = np.array([[0.2, 0.0, 1.0], [0.5, 0.25, 0.75], [0.5, 1.0, 0.0], [0.0, 1.0, 0.5]])
    res = evaluate_choice(pol.choice, Y, static_index=0)
    assert res["policy_value"] == pytest.approx((1.0 + 0.75 + 1.0 + 1.0) / 4)
    assert res["static_value"] == pytest.approx(0.3)
    assert res["oracle_value"] == pytest.approx(np.mean([1.0, 0.75, 1.0, 1.0]))
    assert res["random_value"] == pytest.approx(Y.mean())
    d = np.array([0.8, 0.25, 0.5, 1.0])
    assert res["vs_static"]["diff"] == pytest.approx(d.mean())
    assert res["vs_static"]["se"] == pytest.approx(d.std(ddof=1) / 2)
    assert res["vs_static"]["ci_low"] == pytest.approx(d.mean() - 1.959964 * d.std(ddof=1) / 2, rel=1e-5)
    assert res["share_not_static"] == 1.0


def test_lcb_keeps_the_reference_when_uncertain() -> None:
    head = LinearHead(coef=np.array([[1.0, 0.0], [0.0, 1.0]]), cov=np.eye(4),
                      featurize=lambda X: np.hstack([np.ones((len(X), 1)), X]), t_ref=np.zeros(2))
    scorer = CandidateScorer(head, np.array([[0.3]]), embed=lambda ts: None, z=2.0, device="cpu")
    pol = pool_assign(scorer, ["ref", "p"], ["a", "b"], T_pool=np.array([[0.0, 0.0], [0.2, 0.0]]))
    assert pol.chosen_ids == ["ref"]


def test_outcome_matrix_averages_samples_and_marks_missing() -> None:
    t = pa.table({"query_id": ["q1", "q1", "q1", "q2", "q3"], "prompt_id": ["a", "a", "b", "a", "a"],
                  "score": [1.0, 0.0, 1.0, 1.0, 0.0]})
    Y = outcome_matrix(t, ["q1", "q2"], ["a", "b"])
    np.testing.assert_allclose(Y, [[0.5, 1.0], [1.0, np.nan]])
    res = evaluate_choice(np.array([1, 1, 1]), np.vstack([Y, [0.0, 1.0]]), static_index=0)
    assert res["n_dropped"] == 1 and res["n_queries"] == 2


def test_by_tier_and_interval_errors() -> None:
    rng = np.random.default_rng(0)
    Y = rng.random((30, 3))
    tiers = by_tier(np.full(30, 2), Y, static_index=0, n_tiers=3)
    assert sum(t["n"] for t in tiers) == 30
    assert all(t["difficulty_low"] <= t["difficulty_high"] for t in tiers)
    assert tiers[0]["difficulty_high"] <= tiers[2]["difficulty_low"]
    with pytest.raises(DataError, match="at least 2"):
        paired_interval(np.array([1.0]), np.array([0.0]))
