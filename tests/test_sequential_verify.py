"""Sequential verification (cpo_engine.causal.sequential): Monte Carlo checks of the guarantees under peeking.

Deterministic seeds, numpy only, a few seconds each. MC margins are ~3 binomial standard errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from cpo_engine.causal import sequential as sq


def _binom_margin(p: float, n: int) -> float:
    return 3.0 * math.sqrt(p * (1 - p) / n)


def _paired_01(rng: np.random.Generator, n: int, p_inc: float, p_cand: float, rho: float = 0.5) -> np.ndarray:
    """Paired 0/1 scores of one query set: the candidate reuses the incumbent's query difficulty with
    probability ``rho`` (graded answers are correlated across prompts); returns cand - inc in {-1, 0, 1}."""
    u = rng.random(n)
    u2 = np.where(rng.random(n) < rho, u, rng.random(n))
    return (u2 < p_cand).astype(float) - (u < p_inc).astype(float)


def _sd_01(p_inc: float, p_cand: float, rho: float = 0.5) -> float:
    """Exact sd of :func:`_paired_01`'s differences."""
    plus = rho * max(p_cand - p_inc, 0) + (1 - rho) * p_cand * (1 - p_inc)
    minus = rho * max(p_inc - p_cand, 0) + (1 - rho) * (1 - p_cand) * p_inc
    return math.sqrt(plus + minus - (plus - minus) ** 2)


def _run(seed: int, uplifts: list[float], n: int, budget: int, alpha: float = 0.05, p_inc: float = 0.4,
         sd: float = 0.5) -> sq.SequentialResult:
    rng = np.random.default_rng(seed)
    d = np.stack([_paired_01(rng, n, p_inc, p_inc + u) for u in uplifts])  # the LLM's outcomes, drawn up front
    return sq.sequential_verify(lambda active, a, b: d[active, a:b], len(uplifts), n, budget, alpha=alpha, sd=sd)


def test_incremental_cs_matches_vectorized():
    d = np.random.default_rng(3).choice([-1.0, 0.0, 1.0], p=[0.2, 0.5, 0.3], size=300)
    lo, hi = sq.diff_cs(d, 0.05)
    cs = sq.ConfSeq(0.05, k=2)  # the second sequence skips every other step (a failed call)
    got, skip = [], []
    for t, v in enumerate(d):
        cs.update(np.array([v, v if t % 2 == 0 else np.nan]))
        got.append((cs.lower[0], cs.upper[0]))
        skip.append((cs.lower[1], cs.upper[1]))
    np.testing.assert_allclose(np.array(got), np.stack([lo, hi], axis=1), atol=1e-12)
    lo2, hi2 = sq.diff_cs(d[::2], 0.05)
    np.testing.assert_allclose(np.array(skip)[::2], np.stack([lo2, hi2], axis=1), atol=1e-12)
    assert lo[-1] < d.mean() < hi[-1] and hi[-1] - lo[-1] < 0.4


def _promoted_by_cs(d: np.ndarray, alpha: float, m: int, margin: float = 0.0) -> np.ndarray:
    """Which sequences the procedure promotes when each candidate may see all its queries (budget n (m + 1)): the
    running-intersection CS's lower end crosses the margin before the upper end falls below 0 (then it stops)."""
    lo, hi = sq.diff_cs(d, sq.cs_alpha(alpha, m))
    n = d.shape[-1]
    first_up = np.where((lo > margin).any(-1), (lo > margin).argmax(-1), n)
    first_down = np.where((hi < 0).any(-1), (hi < 0).argmax(-1), n)
    return first_up < first_down


def _null_diffs(seed: int, reps: int, m: int, n: int) -> np.ndarray:
    """(reps, m, n) paired differences of candidates no better than the incumbent: mean 0 with the largest
    variance (d = +-1, the hardest null for a promotion), and one slightly worse candidate on 0/1 scores."""
    rng = np.random.default_rng(seed)
    d = rng.choice([-1.0, 1.0], size=(reps, m, n))
    d[:, -1] = _paired_01(rng, reps * n, 0.5, 0.45, rho=0.0).reshape(reps, n)
    return d


def test_procedure_matches_its_specification():
    """The budgeted procedure (look after every query, stop each candidate once decided) promotes exactly what
    the CS path says, on null and non-null candidates: the MC tests below may run on the vectorized CS."""
    m, n = 4, 150
    d = _null_diffs(5, 40, m, n)
    d[:20, 0] = _paired_01(np.random.default_rng(6), 20 * n, 0.4, 0.7).reshape(20, n)
    spec = _promoted_by_cs(d, 0.2, m)
    for r in range(d.shape[0]):
        res = sq.sequential_verify(lambda active, a, b: d[r][active, a:b], m, n, n * (m + 1), alpha=0.2)
        assert sorted(res.promoted) == np.flatnonzero(spec[r]).tolist()
        assert res.calls <= n * (m + 1)
    assert spec[:20, 0].mean() > 0.5


def test_null_false_promotions_at_most_alpha_over_candidates_with_peeking():
    """(a) 20 candidates no better than the incumbent, a look after every query: over 2000 verifications the
    share with any false promotion is <= alpha (plus MC margin). Without the Bonferroni split it is ~0.15."""
    alpha, m, n, reps = 0.05, 20, 120, 2000
    rate = float(_promoted_by_cs(_null_diffs(11, reps, m, n), alpha, m).any(-1).mean())
    assert rate <= alpha + _binom_margin(alpha, reps), f"false promotion rate {rate:.3f} > {alpha}"


def test_cs_coverage_under_peeking():
    """(b) The CS at its default level (95%) holds at every query at once: the running intersection after the
    last query still contains the mean in >= 95% of 2000 sequences (mean 0, +0.3 and a skewed -0.22)."""
    reps, n = 2000, 300
    rng = np.random.default_rng(7)
    for mean, d in ((0.0, rng.choice([-1.0, 1.0], size=(reps, n))),
                    (0.3, _paired_01(rng, reps * n, 0.3, 0.6, rho=0.0).reshape(reps, n)),
                    (-0.22, rng.choice([-1.0, 0.0, 0.8], p=[0.3, 0.6, 0.1], size=(reps, n)))):
        assert abs(d.mean() - mean) < 0.01
        lo, hi = sq.diff_cs(d)
        ever_missed = np.any((lo > mean) | (hi < mean), axis=1).mean()
        assert ever_missed <= 0.05 + _binom_margin(0.05, reps), f"mean {mean}: missed at some look in {ever_missed:.3f}"


def test_power_of_a_015_uplift_within_budget():
    """(c) One candidate +0.15 on 0/1 scores among two null ones, 1200 calls (300 queries x 4 prompts, so at
    least 300 queries each): it is promoted in most of 1000 replications; the procedure itself (40 of them)
    stops it early and promotes no null candidate."""
    reps, n, m = 1000, 300, 3
    rng = np.random.default_rng(20)
    good = _paired_01(rng, reps * n, 0.4, 0.55).reshape(reps, n)
    lower = sq.diff_cs(good, sq.cs_alpha(0.05, m))[0][:, -1]
    assert (lower > 0).mean() >= 0.8, f"promoted in {(lower > 0).mean():.2f} of replications"
    promoted, calls = 0, []
    for r in range(40):
        res = _run(20_000 + r, [0.15, 0.0, 0.0], n, 1200)
        promoted += 0 in res.promoted
        assert res.promoted in ([], [0]) and res.calls <= 1200
        assert res.candidates[0].stop_reason in ("decided better", "budget spent", "queries exhausted")
        calls.append(res.candidates[0].calls)
    assert promoted >= 28 and np.median(calls) < n


@pytest.mark.parametrize("n, m", [(200, 1), (300, 3)])
def test_detectable_uplift_statement_matches_simulated_power(n, m):
    """The stated detectable uplift at ``n`` queries per candidate (sd known) is separated from 0 by query ``n``
    with power ~0.8: between 0.72 and 0.9 over 2000 replications (MC se 0.01; the statement ignores the
    running intersection, which only helps)."""
    sd = _sd_01(0.4, 0.55)
    x = sq.detectable_uplift(n, sd, sq.cs_alpha(0.05, m))
    res0 = _run(0, [0.15] + [0.0] * (m - 1), n, n * (m + 1), sd=sd)
    assert f"{x:.3f}" in sq.power_statement(res0)
    rng = np.random.default_rng(30 + n)
    d = rng.choice([-1.0, 0.0, 1.0], p=[(sd**2 + x**2 - x) / 2, 1 - sd**2 - x**2, (sd**2 + x**2 + x) / 2],
                   size=(2000, n))  # mean x, sd sd
    power = float((sq.diff_cs(d, sq.cs_alpha(0.05, m))[0][:, -1] > 0).mean())
    assert 0.72 <= power <= 0.9, f"stated {x:.3f} detectable with power 0.8; simulated {power:.2f}"


def test_budget_and_stop_reasons():
    res = _run(1, [0.6, -0.6, 0.0], 400, 4 * 400)
    reasons = {c.index: c.stop_reason for c in res.candidates}
    assert reasons[0] == "decided better" and reasons[1] == "decided worse"
    assert reasons[2] in ("budget spent", "queries exhausted")
    assert res.calls == sum(c.calls for c in res.candidates) + res.history[-1]["queries"]  # + the incumbent's
    small = _run(1, [0.0, 0.0], 400, 30)
    assert small.calls <= 30 and all(c.stop_reason == "budget spent" for c in small.candidates)
    with pytest.raises(Exception, match="alpha"):
        sq.sequential_verify(lambda *a: None, 1, 10, 10, alpha=1.5)
