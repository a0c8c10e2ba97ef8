"""Beam-search invariants and the trust region."""

from __future__ import annotations

import numpy as np
import pytest

from cpo_engine.exceptions import ConfigError, NotFittedError
from cpo_engine.search import (BeamSearch, Candidate, CandidateScorer, EditProposer, BeamConfig,
                               TrustRegion)
from tests.search_helpers import SEEDS, hash_embed, make_head


def _search(trust: TrustRegion | None, rounds: int = 3, z: float = 1.0, seed: int = 0,  # noqa: ANN202
            **beam: int):
    head = make_head(seed=seed)
    X = np.random.default_rng(seed).normal(size=(40, 2))
    scorer = CandidateScorer(head, X, hash_embed, trust_region=trust, z=z, device="cpu")
    cfg = BeamConfig(**({"rounds": rounds, "beam_width": 4, "query_beams": 2, "children_per_beam": 12, "top_k": 3}
                        | beam))
    return BeamSearch(EditProposer(seed=seed), scorer, cfg).run([Candidate.seed(t) for t in SEEDS]), scorer


@pytest.mark.parametrize("seed", [0, 1])
def test_never_loses_best_so_far_and_dedups(seed: int) -> None:
    res, _ = _search(None, seed=seed)
    best = [t["best_static_objective"] for t in res.trace if "best_static_objective" in t]
    assert len(best) == 4 and all(b2 >= b1 for b1, b2 in zip(best, best[1:]))
    assert res.static_objective[res.best_static] == pytest.approx(best[-1])
    assert res.static_objective[res.best_static] >= res.static_objective[: len(SEEDS)].max()
    keys = [c.key for c in res.candidates]
    assert len(keys) == len(set(keys))
    mean_best = [t["mean_query_best_objective"] for t in res.trace]
    assert all(b2 >= b1 - 1e-12 for b1, b2 in zip(mean_best, mean_best[1:]))


@pytest.mark.parametrize("beam", [{}, {"children_per_beam": 60}])
def test_lineage_points_to_earlier_candidates(beam: dict) -> None:
    """A parent was scored before its child (in an earlier round, or in an earlier step of a refilled round)."""
    res, _ = _search(None, **beam)
    position = {c.id: i for i, c in enumerate(res.candidates)}
    for i, c in enumerate(res.candidates):
        if c.round == 0:
            assert c.parent is None and c.operator is None
        else:
            assert c.parent in position and position[c.parent] < i and c.operator
            assert res.candidates[position[c.parent]].round <= c.round
    assert max(c.round for c in res.candidates) == 3


def test_rounds_refill_to_their_budget_when_parents_run_dry() -> None:
    """Few short seeds cannot give beam_width * children_per_beam children in one step: the round re-selects
    beams from what it scored and asks again, and reaches its budget; without refills it stops short."""
    budget = 4 * 60
    res, _ = _search(None, rounds=2, children_per_beam=60)
    first = res.trace[1]
    assert first["steps"] > 1 and first["scored"] >= budget
    assert sum(c.round == 1 for c in res.candidates) == first["scored"]
    dry, _ = _search(None, rounds=2, children_per_beam=60, refills=0)
    assert dry.trace[1]["steps"] == 1 and dry.trace[1]["scored"] < budget


def test_default_beam_scores_thousands_per_round() -> None:
    cfg = BeamConfig()
    assert cfg.round_budget >= 2000 and cfg.beam_width * cfg.children_per_beam == cfg.round_budget


def test_running_topk_equals_brute_force_over_archive() -> None:
    res, scorer = _search(None)
    eff, se = scorer.per_query(res.T)
    obj = eff - scorer.z * se
    brute = np.argsort(-obj, axis=1, kind="stable")[:, :3]
    np.testing.assert_allclose(np.take_along_axis(obj, brute, 1), res.topk_value, rtol=1e-4, atol=1e-5)
    # indices may differ only between candidates with tied objectives (texts with the same bag of words)
    np.testing.assert_allclose(np.take_along_axis(obj, res.topk_index, 1), res.topk_value, rtol=1e-4, atol=1e-5)


def test_trust_region_excludes_off_support() -> None:
    T_logged = hash_embed(SEEDS)
    trust = TrustRegion(mode="exclude", slack=1.0).fit(T_logged)
    assert (trust.distance(T_logged) <= trust.radius_ + 1e-9).all()
    far = trust.mean_ + 50 * (T_logged[0] - trust.mean_)
    bias, dist = trust.bias(np.vstack([T_logged, far]))
    assert np.isneginf(bias[-1]) and (bias[:-1] == 0).all() and dist[-1] > trust.radius_
    res, _ = _search(trust)
    out = ~np.isfinite(res.static_objective)
    assert out.any() and (res.distance[out] > trust.radius_).all()
    assert not np.isin(np.flatnonzero(out), res.topk_index).any()
    parents = {c.parent for c in res.candidates}
    assert not parents & {c.id for c, o in zip(res.candidates, out) if o}


def test_trust_region_penalize_and_errors() -> None:
    T_logged = hash_embed(SEEDS)
    trust = TrustRegion(mode="penalize", slack=1.0, penalty=0.5).fit(T_logged)
    far = trust.mean_ + 3 * (T_logged[0] - trust.mean_)
    bias, dist = trust.bias(far[None, :])
    assert bias[0] == pytest.approx(-0.5 * (dist[0] / trust.radius_ - 1))
    with pytest.raises(NotFittedError, match="call fit"):
        TrustRegion().distance(T_logged)
    with pytest.raises(ConfigError, match="mode"):
        TrustRegion(mode="wide").fit(T_logged)


def test_lcb_and_length_penalty_change_the_objective() -> None:
    head = make_head(noise=0.2)
    X = np.random.default_rng(0).normal(size=(10, 2))
    texts = ["Be brief.", "Let's think step by step and verify every calculation twice."]
    plain = CandidateScorer(head, X, hash_embed, z=0.0, device="cpu").score_texts(texts, 1)
    lcb = CandidateScorer(head, X, hash_embed, z=2.0, device="cpu").score_texts(texts, 1)
    np.testing.assert_allclose(lcb.static_objective, plain.static_effect - 2 * plain.static_se)
    long = CandidateScorer(head, X, hash_embed, z=0.0, length_penalty=0.1, device="cpu").score_texts(texts, 1)
    words = np.array([2, 10])
    np.testing.assert_allclose(long.static_objective, plain.static_objective - 0.1 * words / 100)


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="beam_width"):
        BeamConfig(beam_width=0)
    with pytest.raises(ConfigError, match="refills"):
        BeamConfig(refills=-1)
    head = make_head()
    bad = CandidateScorer(head, np.zeros((3, 2)), lambda ts: np.zeros((len(ts), 2)), device="cpu")
    with pytest.raises(ConfigError, match="prompt PCA"):
        bad.score_texts(["a"], 1)
