"""The best static prompt on confounded logs (cpo_engine.causal.static_choice), checked against known truth.

Grids are generated with known per-prompt values; logs keep one prompt per query, drawn by a confounded
logging policy (a softmax over prompt length times query difficulty, mixed with 10% uniform). Difficulty
is latent: the query features see only a little of it, so only propensities can remove the bias.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest

from cpo_engine.causal.evidence import ESTIMATED, MEASURED
from cpo_engine.causal.static_choice import StaticChoiceConfig, choose_static
from cpo_engine.exceptions import ConfigError, DataError


def _grid(n_q: int = 3000, n_p: int = 6, seed: int = 0, best: str = "short"):
    """Known truth: P(correct) = sigmoid(ease_q + effect_p); effect falls (best='short') or rises with length."""
    rng = np.random.default_rng(seed)
    ease = rng.normal(0, 1.5, n_q)
    X = np.column_stack([0.25 * ease + rng.normal(0, 1, n_q), rng.normal(0, 1, (n_q, 3))])
    zl = np.linspace(-1.5, 1.5, n_p)
    effect = 0.6 * (-zl if best == "short" else zl)
    prob = 1 / (1 + np.exp(-(ease[:, None] + effect[None, :])))
    return SimpleNamespace(prob=prob, X=X, zl=zl, ease=ease, truth=prob.mean(0), ids=[f"p{j}" for j in range(n_p)])


def _logs(g, beta: float, k: int = 1, seed: int = 1, exploration: float = 0.1):
    """beta > 0: hard queries get long prompts; beta < 0: easy queries get long prompts."""
    rng = np.random.default_rng(seed)
    c = -(g.ease - g.ease.mean()) / g.ease.std()
    logits = beta * c[:, None] * g.zl[None, :]
    pol = np.exp(logits - logits.max(1, keepdims=True))
    pol = (1 - exploration) * pol / pol.sum(1, keepdims=True) + exploration / pol.shape[1]
    q = np.repeat(np.arange(len(g.ease)), k)
    a = (pol[q].cumsum(1) < rng.random(len(q))[:, None]).sum(1)
    y = (rng.random(len(q)) < g.prob[q, a]).astype(float)
    return q, a, y, pol[q, a]


def _naive(q, a, y, n_p):
    return int(np.argmax(np.bincount(a, weights=y, minlength=n_p) / np.maximum(np.bincount(a, minlength=n_p), 1)))


def _regret(g, j):
    return float(g.truth.max() - g.truth[j])


def test_with_propensities_the_choice_corrects_what_misleads_the_naive_average():
    """Easy queries get the long (worse) prompts: the naive average prefers a long prompt; the engine, given the
    logging propensities, picks within 2 points of the best, and says its estimate is doubly robust."""
    g = _grid(best="short")
    q, a, y, pi = _logs(g, beta=-2.5)
    naive = _naive(q, a, y, len(g.ids))
    assert _regret(g, naive) > 0.10  # the construction misleads the naive average
    c = choose_static(q, a, y, g.X, g.ids, propensity=pi, seed=0)
    assert _regret(g, c.index) <= 0.02, (c.prompt_id, c.to_dict()["values"])
    assert c.evidence == ESTIMATED and c.propensity_source == "logged" and "doubly robust" in c.method
    v = c.chosen
    assert v.ci_low <= v.value <= v.ci_high and 0 <= v.ci_low and v.ci_high <= 1


def test_without_confounding_the_choice_is_the_best_prompt():
    g = _grid(best="long", seed=2)
    q, a, y, pi = _logs(g, beta=0.0, seed=3)
    c = choose_static(q, a, y, g.X, g.ids, seed=0)
    assert _regret(g, c.index) <= 0.01 and c.propensity_source == "estimated"


def test_a_full_grid_is_measured_and_picks_the_best_mean():
    g = _grid(n_q=500, best="long", seed=4)
    n_q, n_p = g.prob.shape
    q, a = np.repeat(np.arange(n_q), n_p), np.tile(np.arange(n_p), n_q)
    y = g.prob[q, a]  # noiseless cells: each prompt's value is known exactly
    c = choose_static(q, a, y, g.X, g.ids)
    assert c.evidence == MEASURED and c.index == int(np.argmax(g.truth)) and c.separated


def test_prompts_the_logs_cannot_separate_are_named_and_the_most_run_one_is_kept():
    rng = np.random.default_rng(5)
    n = 400
    q, a = np.arange(n), np.where(rng.random(n) < 0.7, 0, 1)  # p0 run on 70% of queries, p1 on 30%
    y = (rng.random(n) < 0.5).astype(float)  # the same value
    c = choose_static(q, a, y, rng.normal(size=(n, 2)), ["p0", "p1"], propensity=np.where(a == 0, 0.7, 0.3))
    assert not c.separated and set(c.to_dict()["contenders"]) == {"p0", "p1"}
    assert c.prompt_id == "p0" and "cannot separate" in c.sentence()
    off = choose_static(q, a, y, rng.normal(size=(n, 2)), ["p0", "p1"], propensity=np.where(a == 0, 0.7, 0.3),
                        config=StaticChoiceConfig(keep_logged=False))
    assert not off.separated


def test_without_evidence_against_it_the_best_logged_mean_is_kept_not_a_noisier_estimate():
    """Logs confounded by something the features see and the propensities given, the most-logged prompt shown
    worse: what the plain average picks is recommended unless the doubly robust estimates show it worse.
    Over 12 draws the engine's mean regret is at most the naive average's (the rule's promise) and the
    reason says which rung of the rule chose."""
    g = _grid(n_q=2000, n_p=6, seed=11, best="long")
    eng, nai, reasons = [], [], set()
    for s in range(12):
        q, a, y, pi = _logs(g, beta=1.5, seed=200 + s)  # hard queries get long prompts: the naive average is
        c = choose_static(q, a, y, g.X, g.ids, propensity=pi, seed=s)  # misled against the best (long) prompts
        eng.append(_regret(g, c.index))
        nai.append(_regret(g, _naive(q, a, y, len(g.ids))))
        reasons.add(c.reason)
        assert c.reason in ("most logged", "best logged mean", "best estimate")
        if c.reason != "best estimate":  # kept a default: the best estimate must not show it worse
            assert c.index in c.contenders
    assert np.mean(eng) <= np.mean(nai) + 0.005, (np.mean(eng), np.mean(nai))
    assert np.mean(eng) <= 0.03, eng


def test_the_best_estimate_shrinks_a_lucky_thinly_logged_prompt():
    """Empirical Bayes, not the raw argmax: a prompt logged on 15 rows that happened to score well (10 of 15,
    its true rate 0.5) has the highest raw estimate but the widest interval; shrunk, it does not beat a
    well-logged prompt that is truly better than the rest (0.6)."""
    rng = np.random.default_rng(8)
    n = 1500
    a = np.where(np.arange(n) < 15, 3, rng.integers(0, 3, n))
    truth = np.array([0.5, 0.5, 0.6, 0.5])
    y = (rng.random(n) < truth[a]).astype(float)
    y[:15] = [1.0] * 10 + [0.0] * 5
    pi = np.where(a == 3, 15 / n, (1 - 15 / n) / 3)
    cfg = StaticChoiceConfig(keep_logged=False, keep_logged_mean=False)
    c = choose_static(np.arange(n), a, y, rng.normal(size=(n, 2)), ["a", "b", "good", "lucky"], propensity=pi,
                      config=cfg)
    raw = max(c.values, key=lambda v: v.value)
    assert raw.prompt_id == "lucky" and c.prompt_id == "good" and c.reason == "best estimate"
    point = choose_static(np.arange(n), a, y, rng.normal(size=(n, 2)), ["a", "b", "good", "lucky"], propensity=pi,
                          config=StaticChoiceConfig(keep_logged=False, keep_logged_mean=False, rule="point"))
    assert point.prompt_id == "lucky"  # what the shrinkage prevents


def _ladder(means, sds, n_rows, naive, config=None, source="logged"):
    """The choice rule alone (static_choice._choose) on per-query pseudo-outcomes with the given means and
    spreads (independent columns, 400 queries): the rung it takes is then known exactly."""
    from cpo_engine.causal.static_choice import _choose

    rng = np.random.default_rng(0)
    z = rng.normal(size=(400, len(means)))
    z = (z - z.mean(0)) / z.std(0, ddof=1)
    psi = np.asarray(means)[None, :] + z * np.asarray(sds)[None, :]
    ids = [f"p{j}" for j in range(len(means))]
    return _choose(psi, np.arange(len(means)), ids, np.asarray(n_rows), np.asarray(naive, dtype=float),
                   np.array([0.0, 1.0]), ESTIMATED, "doubly robust", source, {}, config or StaticChoiceConfig())


@pytest.mark.parametrize("means, naive, expect, reason", [
    # p0 is the most logged; p1 the best estimate; p2 the best logged mean (se of a paired difference 0.035)
    ([0.58, 0.63, 0.59, 0.4], [0.5, 0.55, 0.7, 0.3], "p0", "most logged"),  # p0 a contender, p2 not ahead
    ([0.58, 0.63, 0.62, 0.4], [0.5, 0.55, 0.7, 0.3], "p2", "best logged mean"),  # p2 ahead of p0 by 1.1 se
    ([0.30, 0.62, 0.60, 0.5], [0.5, 0.55, 0.7, 0.3], "p2", "best logged mean"),  # p0 shown worse, p2 a contender
    ([0.30, 0.62, 0.40, 0.5], [0.5, 0.55, 0.7, 0.3], "p1", "best estimate"),  # both defaults shown worse
])
def test_the_rule_leaves_the_status_quo_then_the_plain_average_only_on_evidence(means, naive, expect, reason):
    c = _ladder(means, [0.5] * 4, [400, 100, 100, 100], naive)
    assert (c.prompt_id, c.reason) == (expect, reason), (c.prompt_id, c.reason, c.contenders)
    assert c.kept_most_logged == (reason == "most logged") and c.contenders[0] == c.index
    if reason == "best logged mean":  # without that rung the best estimate or the status quo is taken instead
        off = _ladder(means, [0.5] * 4, [400, 100, 100, 100], naive, StaticChoiceConfig(keep_logged_mean=False))
        assert off.prompt_id != "p2"


def test_without_propensities_the_status_quo_has_no_priority_over_the_best_logged_mean():
    """Propensities estimated from the query features cannot see latent confounding: how often a prompt was
    logged may track difficulty. With logged propensities the most-logged p0 is kept unless the best logged
    mean p2 is ahead by one standard error; with estimated ones the doubly robust estimates decide between
    the two by their sign (p2 ahead by 0.3 se here)."""
    args = ([0.58, 0.63, 0.59, 0.4], [0.5] * 4, [400, 100, 100, 100], [0.5, 0.55, 0.7, 0.3])
    assert (_ladder(*args).prompt_id, _ladder(*args).reason) == ("p0", "most logged")
    c = _ladder(*args, source="estimated")
    assert (c.prompt_id, c.reason) == ("p2", "best logged mean") and not c.kept_most_logged
    behind = _ladder([0.58, 0.63, 0.57, 0.4], *args[1:], source="estimated")  # p2 behind p0: p0 is kept
    assert (behind.prompt_id, behind.reason) == ("p0", "most logged")
    old = _ladder(*args, StaticChoiceConfig(ahead_z_estimated=1.0), source="estimated")
    assert old.prompt_id == "p0"


def test_the_best_estimate_does_not_pass_over_a_clear_winner_for_a_narrower_interval():
    """Empirical Bayes against the lower bound: a prompt at 0.66 (se 0.05) among values spread from 0.3 to
    0.6 is the best estimate; the lower bound would take the narrow 0.60 (se 0.005), the bias toward prompts
    logged on queries whose scores barely vary (under confounding by difficulty: the easy ones)."""
    means, sds = [0.3, 0.4, 0.5, 0.60, 0.66], [0.4, 0.4, 0.4, 0.1, 1.0]
    off = dict(keep_logged=False, keep_logged_mean=False)
    eb = _ladder(means, sds, [100] * 5, [0.3, 0.4, 0.5, 0.6, 0.66], StaticChoiceConfig(**off))
    lcb = _ladder(means, sds, [100] * 5, [0.3, 0.4, 0.5, 0.6, 0.66], StaticChoiceConfig(rule="lcb", **off))
    assert eb.prompt_id == "p4" and lcb.prompt_id == "p3"


def test_a_rarely_logged_prompt_is_no_candidate():
    rng = np.random.default_rng(6)
    n = 300
    a = np.where(np.arange(n) < 4, 2, rng.integers(0, 2, n))
    y = np.where(a == 2, 1.0, (rng.random(n) < 0.5).astype(float))  # 4 lucky rows
    c = choose_static(np.arange(n), a, y, rng.normal(size=(n, 2)), ["a", "b", "rare"])
    assert c.prompt_id != "rare" and "rare" in c.excluded and "min_rows" in c.excluded["rare"]


def test_bad_propensities_and_config_fail_clearly():
    q, a, y = np.arange(20), np.zeros(20, dtype=int), np.ones(20)
    with pytest.raises(DataError, match="row 3"):
        choose_static(q, a, y, np.zeros((20, 1)), ["p"], propensity=np.r_[[0.5] * 3, [1.5], [0.5] * 16])
    with pytest.raises(ConfigError):
        StaticChoiceConfig(level=1.2)


@pytest.mark.slow
def test_the_printed_interval_covers_each_prompts_value_at_its_level():
    """Monte Carlo at the defaults: the 95% interval of every prompt's value, one logged prompt per query,
    confounded logs with the propensities given, covers the true value in 0.90-0.99 of the draws."""
    g = _grid(n_q=1500, n_p=4, seed=7, best="short")
    hits, n = 0, 0
    for s in range(60):
        q, a, y, pi = _logs(g, beta=-2.0, seed=100 + s, exploration=0.2)
        c = choose_static(q, a, y, g.X, g.ids, propensity=pi, seed=s)
        for v in c.values:
            hits += v.ci_low <= g.truth[v.index] <= v.ci_high
            n += 1
    assert 0.90 <= hits / n <= 0.99, hits / n


def test_cpo_run_names_one_static_prompt_everywhere(tmp_path):
    """On observational logs (one prompt per query) the headline, the details, summary.json, the best static
    prompt file and the policy agree on the one static prompt and on the logging policy's value."""
    import json

    from cpo_engine.data.grid import split_queries
    from cpo_engine.workflows.run import choose_pool, fit_models, training_logs
    from cpo_engine.workflows.run_outputs import write_run_outputs
    from tests.test_workflow_run import _cfg, _synthetic

    reps, y, table = _synthetic(n_q=300)
    logged = np.random.default_rng(3).integers(0, 5, size=300)
    keep = np.flatnonzero(reps.row_prompt == logged[reps.row_query])
    keep = keep[np.unique(reps.row_query[keep], return_index=True)[1]]  # one row per query
    reps.row_query, reps.row_prompt, y = reps.row_query[keep], reps.row_prompt[keep], y[keep]
    table = table.take(keep).append_column("propensity", pa.array(np.full(len(keep), 0.2)))
    cfg = _cfg(query_beams=0, children_per_beam=3)
    train, test = split_queries(reps.query_texts, cfg.holdout.test_fraction, 0)
    logs = training_logs(table, reps, train, cfg.holdout, seed=0)
    assert logs.propensity is not None and np.allclose(logs.propensity, 0.2)
    causal, outcome = fit_models(reps, logs, cfg)
    pool = choose_pool(reps, table, logs, test, causal, outcome, cfg)
    assert pool.static_index == pool.incumbent_index == pool.static_choice.index
    evaluation, paths = write_run_outputs(tmp_path, reps, cfg, causal, pool, None, train, test, {"fit": 1.0})
    sid = str(reps.prompt_ids[pool.static_index])
    rec = evaluation["recommendation"]
    summary = json.loads(paths["summary"].read_text())
    best = json.loads(paths["best_static"].read_text())
    policy = json.loads((tmp_path / "model" / "policy.json").read_text())
    assert rec["static_prompt_id"] == sid == evaluation["held_out"]["static_prompt"]["id"]
    assert summary["static_choice"]["prompt_id"] == sid == best["logged"]["choice"]["prompt_id"]
    assert policy["static_prompt_id"] == sid == policy["evidence"]["static_choice"]["prompt_id"]
    assert policy["evidence"]["heterogeneity_test"].startswith("honest")  # computed on the run's own logs
    assert f"'{sid}'" in rec["headline"]
    assert pool.static_choice.sentence() in rec["details"]
    lg = evaluation["held_out"]["logging_policy"]
    pv = evaluation["policy_values"]["values"]["logging policy (as logged)"]
    assert lg["value"] == pytest.approx(pv["value"])
    assert any(f"scored {lg['value']:.4f}" in d for d in rec["details"])


def _one_prompt_logs(n_q: int, heterogeneity: float, seed: int):
    """One logged prompt per query among 5, confounded by x0; the effect of prompt j is 0.15*j plus, with
    heterogeneity, a part that flips sign with x1."""
    from tests.search_helpers import SEEDS, hash_embed

    rng = np.random.default_rng(seed)
    texts = list(SEEDS) + ["Answer with one number only."]
    T = hash_embed(texts)
    X = rng.normal(size=(n_q, 3))
    base = 0.15 * np.arange(5)[None, :] + heterogeneity * np.outer(X[:, 1], np.array([1, -1, 1, -1, 0.5]))
    logits = 0.8 * np.outer(X[:, 0], np.arange(5) - 2)
    pol = 0.9 * np.exp(logits) / np.exp(logits).sum(1, keepdims=True) + 0.02
    a = (pol.cumsum(1) < rng.random(n_q)[:, None]).sum(1).clip(0, 4)
    y = 0.3 * X[:, 0] + base[np.arange(n_q), a] + rng.normal(0, 1, n_q)
    return X, T, np.arange(n_q), a, y, pol[np.arange(n_q), a]


def _honest_p(n_q: int, heterogeneity: float, seed: int) -> float:
    from cpo_engine.causal import CausalConfig
    from cpo_engine.policy.policy import honest_heterogeneity

    X, T, q, a, y, pi = _one_prompt_logs(n_q, heterogeneity, seed)
    model = CausalConfig(cv=3).make_model(device="cpu", random_state=seed)
    model.fit(y, T[a], X=X, groups=q)
    choice = choose_static(q, a, y, X, [f"p{j}" for j in range(5)], propensity=pi, seed=seed)
    return honest_heterogeneity(model, X, T, choice)["p_value"]


def _bench_design_test(seed: int, heterogeneity: float) -> dict:
    """bench_calibration's one_per_query design (800 queries, 8 prompts with random 6-d embeddings, logging
    confounded by x0, propensities given), with a 3-fold model to keep the test fast."""
    import warnings

    from cpo_engine.causal import CausalConfig
    from cpo_engine.policy.policy import honest_heterogeneity

    rng = np.random.default_rng((seed, 0x0E1))
    n, k = 800, 8
    X, T = rng.normal(size=(n, 3)), rng.normal(size=(k, 6))
    effect, s = rng.normal(0, 0.15, k), rng.normal(0, 1, k)
    logits = np.outer(X[:, 0], s)
    pol = np.exp(logits - logits.max(1, keepdims=True))
    pol = 0.9 * pol / pol.sum(1, keepdims=True) + 0.1 / k
    a = np.minimum((pol.cumsum(1) < rng.random(n)[:, None]).sum(1), k - 1)
    y = (0.3 * X[:, [0]] + effect + heterogeneity * np.outer(X[:, 1], s))[np.arange(n), a] + rng.normal(0, 1, n)
    q = np.arange(n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = CausalConfig(cv=3).make_model(device="cpu", random_state=seed)
        model.fit(y, T[a], X=X, groups=q)
        choice = choose_static(q, a, y, X, [f"p{j}" for j in range(k)], propensity=pol[q, a], seed=seed)
        return honest_heterogeneity(model, X, T, choice)


@pytest.mark.slow
def test_the_honest_heterogeneity_test_holds_its_level_with_one_prompt_per_query():
    """Monte Carlo at the defaults (the per-query policy falls back when p >= 0.05), 150 data sets under no
    heterogeneity: it rejects in about 5% (measured 4.0%; at most 9% here) and its studentized slope has
    about unit variance (1.19 measured; at most 1.4). Fitting on each half and testing on the other, both
    directions pooled, gave 9.3% and 1.53 on this design (13.5% on bench_calibration's): the two directions
    are nearly the same statistic counted twice. With heterogeneity it finds it."""
    null = [_bench_design_test(s, 0.0) for s in range(150)]
    p = np.array([r["p_value"] for r in null])
    t = np.array([r["slope"] / r["se"] for r in null])
    assert np.mean(p < 0.05) <= 0.09, np.sort(p)[:15]
    assert t.var() <= 1.4, t.var()
    alt = [_honest_p(600, 0.6, 100 + s) for s in range(10)]
    assert np.mean(np.array(alt) < 0.05) >= 0.8, alt


def test_the_honest_heterogeneity_test_does_not_depend_on_which_prompt_was_chosen():
    """Its reference prompt is the most logged one, not the chosen static prompt: the choice won partly on the
    test half's noise, a winner's curse the fit and the held-out uplifts would share (8.5% rejections at 5%
    on bench_calibration's null with it, 6% without)."""
    from dataclasses import replace

    from cpo_engine.causal import CausalConfig
    from cpo_engine.policy.policy import honest_heterogeneity

    X, T, q, a, y, pi = _one_prompt_logs(400, 0.3, 3)
    model = CausalConfig(cv=3).make_model(device="cpu", random_state=3)
    model.fit(y, T[a], X=X, groups=q)
    choice = choose_static(q, a, y, X, [f"p{j}" for j in range(5)], propensity=pi, seed=3)
    other = next(v for v in choice.values if v.index != choice.index)
    moved = replace(choice, index=other.index, prompt_id=other.prompt_id)
    first, second = honest_heterogeneity(model, X, T, choice), honest_heterogeneity(model, X, T, moved)
    assert first["p_value"] == second["p_value"] and first["slope"] == second["slope"]


def test_without_propensities_latent_confounding_costs_no_more_than_the_naive_average():
    """The benchmark's synthetic grid (bench/bench_observational.py), hard queries given the long prompts by a
    difficulty the features barely see, and no propensities: nothing can identify the values there, and the
    engine must not do worse than the best logged mean (paired over the same logs, beyond Monte Carlo error).
    Keeping the most-logged prompt by one standard error here, as with logged propensities, cost 30 points
    against the naive average's 22-27."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "bench_observational.py"
    spec = importlib.util.spec_from_file_location("bench_observational", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    grid = bench.synthetic_grid("long")
    true = grid.truth.mean(0)
    for beta in (1.0, 3.0):
        pol = bench.logging_policy(grid, "difficulty", beta)
        diff = []
        for s in range(6):
            logs = bench.draw(grid, pol, 1, np.random.default_rng([s, int(beta * 10) + 100, 1, 0]))
            picks = bench.pick_all(grid, logs, False, s)
            diff.append(100 * (true[picks["naive"]] - true[picks["engine"]]))  # engine's regret - naive's
        d = np.asarray(diff)
        assert d.mean() <= 2 * d.std(ddof=1) / np.sqrt(len(d)) + 1e-9, (beta, diff)
