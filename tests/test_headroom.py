"""Headroom first (cpo_engine.causal.headroom): generated grids with a known between-prompt variance."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from cpo_engine.causal.headroom import headroom, headroom_table


def _grid(seed: int, prompt_sd: float, n_q: int = 300, n_p: int = 8, reps: int = 2, noise_sd: float = 0.3,
          binary: bool = False) -> tuple[pa.Table, float, float]:
    """Every prompt on every query, ``reps`` samples a cell; query difficulty sd 0.5 (it must cancel). Returns
    the table, the prompts' realised between-prompt variance (ddof 1) and the response noise variance."""
    rng = np.random.default_rng(seed)
    effects = rng.normal(0.0, 1.0, n_p)
    effects = prompt_sd * (effects - effects.mean()) / effects.std(ddof=1) if prompt_sd else np.zeros(n_p)
    q = np.repeat(np.arange(n_q), n_p * reps)
    p = np.tile(np.repeat(np.arange(n_p), reps), n_q)
    if binary:  # 0/1 grades: P(correct) = query ease + prompt effect
        mean = np.clip(rng.uniform(0.2, 0.8, n_q)[q] + effects[p], 0.0, 1.0)
        y = (rng.random(q.size) < mean).astype(float)
        noise = float(np.mean(mean * (1 - mean)))
    else:
        y = rng.normal(0.0, 0.5, n_q)[q] + effects[p] + rng.normal(0.0, noise_sd, q.size)
        noise = noise_sd ** 2
    t = pa.table({"query_id": [f"q{i}" for i in q], "prompt_id": [f"p{j}" for j in p], "score": y})
    return t, float(np.var(effects, ddof=1)), noise


@pytest.mark.parametrize("prompt_sd, verdict", [(0.0, "no detectable headroom"), (0.1, "can pay")])
def test_estimate_and_verdict_on_a_gaussian_grid(prompt_sd, verdict):
    t, tau2, noise = _grid(1, prompt_sd)
    h = headroom_table(t)
    assert h["verdict"] == verdict, h["line"]
    assert abs(h["between_prompt_variance"] - tau2) <= 3 * h["se"]
    assert h["response_noise_variance"] == pytest.approx(noise, rel=0.1)
    assert h["repeated_cells"] == 300 * 8 and h["prompts_compared"] == 8
    assert ("can pay" in h["line"]) == (verdict == "can pay")


def test_estimate_is_unbiased_and_its_se_honest():
    """Over 200 grids: the mean estimate is the true variance (zero and 0.1^2), and the 95% interval covers
    it in >= 90% of grids; with tau = 0 the verdict says 'can pay' in <= 5% + margin."""
    for sd in (0.0, 0.1):
        est, cover, pays = [], 0, 0
        for s in range(200):
            t, tau2, _ = _grid(100 + s, sd, n_q=60, n_p=6, reps=1)
            h = headroom_table(t)
            est.append(h["between_prompt_variance"] - tau2)
            cover += h["ci_low"] <= tau2 <= h["ci_high"]
            pays += h["verdict"] == "can pay"
        assert abs(np.mean(est)) < 3 * np.std(est) / np.sqrt(200)
        assert cover / 200 >= 0.9
        if sd == 0.0:
            assert pays / 200 <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 200)


def test_binary_scores_and_unbalanced_design():
    t, tau2, noise = _grid(3, 0.08, n_q=400, n_p=6, reps=3, binary=True)
    h = headroom_table(t)
    assert h["verdict"] == "can pay" and abs(h["between_prompt_variance"] - tau2) <= 3 * h["se"]
    assert h["response_noise_variance"] == pytest.approx(noise, rel=0.1)
    keep = np.random.default_rng(4).random(t.num_rows) < 0.5  # a random design: each query sees some prompts
    h2 = headroom_table(t.filter(pa.array(keep)))
    assert h2["verdict"] == "can pay" and abs(h2["between_prompt_variance"] - tau2) <= 3 * h2["se"]
    t0, _, _ = _grid(5, 0.0, n_q=400, n_p=6, reps=1, binary=True)
    h0 = headroom_table(t0)
    assert h0["verdict"] == "no detectable headroom" and h0["response_noise_variance"] is None
    assert "response noise is not separated" in h0["line"]


def test_one_prompt_or_no_shared_queries_is_unknown():
    h = headroom(["a", "b", "c"], ["p", "p", "p"], [1.0, 0.0, 1.0])
    assert h["verdict"] == "unknown" and "fewer than 2 prompts" in h["line"]
    h = headroom(["a", "b", "c", "d"], ["p", "p", "r", "r"], [1.0, 0.0, 1.0, 1.0])
    assert h["verdict"] == "unknown"
