"""Monte Carlo calibration of every interval, bound and error rate the engine prints, at its defaults.

One report, four parts, each with Monte Carlo standard errors (from the spread across independent
replications):

- ``coverage``: 95% intervals of theta(X) from CausalRewardModel with the default penalty
  (final_alpha='cv'), linear and poly2 phi, queries with their own random slope (only a covariance
  clustered by query is right); beside it the coverage of the sandwich around the penalized estimate
  (what intervals were before) and of a per-row (HC1) covariance.
- ``search_null``: the selection rule under a global null (no prompt has any effect; 500 queries,
  16 logged prompts, 5,000 generated candidates, the run's PCA sizes): false departures from the
  incumbent, the reported uplift of chosen prompts (winner's curse), the best static candidate's
  interval; the default rule beside the pointwise rule it replaced.
- ``known_policy``: coverage when the logging policy's E[T | query] is passed (latent confounding).
- ``edits_fdr``: the edit analysis's realized FDR and coverage at prompt_sd 0.03 (null and with effects).
- ``one_per_query``: one logged prompt per query (observational logs, confounded, propensities given): the
  static choice's value intervals, the honest heterogeneity test's size and power, and how often the
  per-query policy departs from the static prompt under a global null of heterogeneity
  (:func:`one_per_query_study` below: the library's static choice and policy, as `cpo run` uses them).

    python bench/bench_calibration.py                 # 200 replications per part (tens of minutes on 2 cores)
    python bench/bench_calibration.py --reps 20       # quick look
    python bench/bench_calibration.py --parts coverage search_null
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

PARTS = ("coverage", "search_null", "known_policy", "edits_fdr", "one_per_query")


def part_coverage(reps: int, seed: int) -> dict:
    from cpo_engine.causal.calibration import CoverageDesign, coverage_study

    design = CoverageDesign()
    return {"linear (default)": coverage_study(reps, design, seed),
            "poly2": coverage_study(reps, design, seed, {"featurizer": "poly2"}),
            "linear, per-row HC1 covariance": coverage_study(reps, design, seed, {"cov_type": "HC1"}),
            "poly2, 200 queries (small sample)": coverage_study(reps, CoverageDesign(n_groups=200), seed,
                                                                {"featurizer": "poly2"})}


def part_search_null(reps: int, seed: int) -> dict:
    from cpo_engine.search.calibration import NullDesign, null_study

    return null_study(reps, NullDesign(), seed)


def part_known_policy(reps: int, seed: int) -> dict:
    from cpo_engine.causal.calibration import CoverageDesign, coverage_study

    latent = CoverageDesign(latent=1.5, random_effect=2.0)
    return {"known policy (t_hat = E[T | query])": coverage_study(reps, CoverageDesign(latent=1.5, random_effect=2.0,
                                                                                      known_policy=True), seed),
            "plain DML under the same latent confounding": coverage_study(reps, latent, seed)}


def part_edits_fdr(reps: int, seed: int) -> dict:
    from cpo_engine.edits.simulate import calibration_study

    return {"null, prompt_sd 0.03": calibration_study(reps, 0.03, null=True, seed=seed + 5000),
            "effects, prompt_sd 0.03": calibration_study(reps, 0.03, null=False, seed=seed + 5000),
            "null, prompt_sd 0.03, query-clustered": calibration_study(reps, 0.03, null=True, seed=seed + 5000,
                                                                       inference="query")}


def one_per_query_study(reps: int, seed: int = 0, n_queries: int = 800, n_prompts: int = 8,
                        heterogeneity: float = 0.0, strength: float = 1.0, d_t: int = 6) -> dict:
    """Monte Carlo of what the engine prints on logs with one logged prompt per query, at its defaults.

    Each replication: query features X (3), prompts with random embeddings T (``d_t``), a confounded logging
    policy (softmax over ``strength`` * x0 * a prompt score, 10% uniform; its propensities given), scores
    ``0.3 x0 + effect_p (+ heterogeneity * x1 * s_p) + N(0, 1)``. A :class:`~cpo_engine.causal.CausalRewardModel`
    is fitted on them, the static prompt chosen (:func:`choose_static`) and the per-query policy learned
    (:func:`~cpo_engine.policy.policy.learn_state`, its checks and fallback). Reported: coverage of every
    prompt's 95% value interval, the chosen prompt's regret, the honest heterogeneity test's rejection rate,
    the share of replications whose policy departs from the static prompt on any query, and the mean share
    of queries it departs on; with Monte Carlo standard errors.
    """
    import warnings

    import numpy as np

    from cpo_engine.causal import CausalConfig
    from cpo_engine.causal.static_choice import choose_static
    from cpo_engine.settings import PolicyConfig
    from cpo_engine.policy.policy import Policy, learn_state
    from cpo_engine.search.config import SelectionConfig

    cover, regret, reject, departs_any, departs_share = [], [], [], [], []
    for r in range(reps):
        rng = np.random.default_rng((seed, r, 0x0E1))
        X = rng.normal(size=(n_queries, 3))
        T = rng.normal(size=(n_prompts, d_t))
        effect = rng.normal(0, 0.15, n_prompts)
        s = rng.normal(0, 1, n_prompts)
        logits = strength * np.outer(X[:, 0], s)
        pol = np.exp(logits - logits.max(1, keepdims=True))
        pol = 0.9 * pol / pol.sum(1, keepdims=True) + 0.1 / n_prompts
        a = np.minimum((pol.cumsum(1) < rng.random(n_queries)[:, None]).sum(1), n_prompts - 1)
        mu = 0.3 * X[:, [0]] + effect[None, :] + heterogeneity * np.outer(X[:, 1], s)
        y = mu[np.arange(n_queries), a] + rng.normal(0, 1, n_queries)
        truth = mu.mean(0)
        q = np.arange(n_queries)
        ids = [f"p{j}" for j in range(n_prompts)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = CausalConfig().make_model(device="cpu", random_state=r)
            model.fit(y, T[a], X=X, groups=q)
            choice = choose_static(q, a, y, X, ids, propensity=pol[q, a], seed=r)
            state = learn_state(model, X, ids, ids, T, np.full(n_prompts, np.nan), SelectionConfig(),
                                static_choice=choice)
            policy = Policy(model, state, PolicyConfig(), device="cpu")
            chosen = policy.assign_features(X, [str(i) for i in q]).column("recommended_prompt_id").to_pylist()
        cover.extend(v.ci_low <= truth[v.index] <= v.ci_high for v in choice.values)
        regret.append(float(truth.max() - truth[choice.index]))
        reject.append(state.evidence["heterogeneity_p_value"] < 0.05)
        share = float(np.mean([c != choice.prompt_id for c in chosen]))
        departs_any.append(share > 0)
        departs_share.append(share)

    def mc(v: list) -> dict:
        v = np.asarray(v, dtype=np.float64)
        return {"mean": float(v.mean()), "mc_se": float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0}

    return {"design": {"reps": reps, "n_queries": n_queries, "n_prompts": n_prompts, "heterogeneity": heterogeneity,
                       "strength": strength, "propensities": "given", "logged_per_query": 1},
            "value_interval_coverage": mc(cover), "static_regret": mc(regret),
            "heterogeneity_test_rejects": mc(reject), "policy_departs_on_any_query": mc(departs_any),
            "share_of_queries_departing": mc(departs_share)}


def part_one_per_query(reps: int, seed: int) -> dict:
    return {"no heterogeneity (null)": one_per_query_study(reps, seed),
            "heterogeneity 0.4": one_per_query_study(max(reps // 2, 2), seed + 1, heterogeneity=0.4)}


def verdict(report: dict) -> dict:
    """The targets of the calibration issue, checked on this report."""
    out = {}
    cov = report.get("coverage")
    if cov:
        out["coverage >= 0.93 (linear, poly2; default penalty)"] = all(
            cov[k]["coverage"] >= 0.93 for k in ("linear (default)", "poly2"))
    null = report.get("search_null")
    if null:
        d = null["rules"]["default (simultaneous, split)"]
        out["false departures <= 0.05 with >= 5,000 null candidates"] = (
            d["false_departures"] <= 0.05 and null["design"]["n_candidates"] >= 5000)
        out["reported uplift of the pick unbiased (|z| within 2 MC se)"] = (
            abs(d["pick_reported_uplift_z"]) <= 2 * d["pick_reported_uplift_z_mc_se"])
    one = report.get("one_per_query")
    if one:
        n = one["no heterogeneity (null)"]
        out["one prompt per query: value coverage 0.93-0.97"] = 0.93 <= n["value_interval_coverage"]["mean"] <= 0.97
        out["one prompt per query: heterogeneity test size <= 0.05 + 2 MC se"] = (
            n["heterogeneity_test_rejects"]["mean"] <= 0.05 + 2 * n["heterogeneity_test_rejects"]["mc_se"])
        out["one prompt per query: policy stays put under the null (departs in <= 10% of data sets)"] = (
            n["policy_departs_on_any_query"]["mean"] <= 0.10)
    ed = report.get("edits_fdr")
    if ed:
        out["edits FDR <= 0.05 at prompt_sd 0.03"] = all(
            ed[k]["fdr"] <= 0.05 for k in ("null, prompt_sd 0.03", "effects, prompt_sd 0.03"))
    return out


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=200, help="replications per setting")
    p.add_argument("--parts", nargs="*", default=list(PARTS), choices=PARTS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench/results/bench_calibration.json")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    from cpo_engine.utils import atomic_write_json, device_info, versions

    runners = {"coverage": part_coverage, "search_null": part_search_null, "known_policy": part_known_policy,
               "edits_fdr": part_edits_fdr, "one_per_query": part_one_per_query}
    run = {"command": "python bench/bench_calibration.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "device": device_info(), "versions": versions(), "loadavg_start": os.getloadavg()}
    report: dict = {"benchmark": "bench_calibration", "device": run["device"], "versions": run["versions"],
                    "config": vars(args), "loadavg_start": run["loadavg_start"], "seconds": {}}
    if set(args.parts) != set(PARTS) and Path(args.out).is_file():
        # a rerun of some parts: the record keeps the other parts, and says which run made each part
        report = json.loads(Path(args.out).read_text())
        report.setdefault("runs", {})
    for part in args.parts:
        t0 = time.perf_counter()
        report[part] = runners[part](args.reps, args.seed)
        report["seconds"][part] = round(time.perf_counter() - t0, 1)
        if "runs" in report:
            report["runs"][part] = run | {"loadavg_end": os.getloadavg()}
        print(part, json.dumps(report[part], default=str)[:2000], flush=True)
        atomic_write_json(args.out, report)  # partial results survive an interrupted run
    report["loadavg_end"] = os.getloadavg()
    report["verdict"] = verdict(report)
    report["notes"] = NOTES
    atomic_write_json(args.out, report)
    print(json.dumps(report["verdict"], indent=1))
    return 0


NOTES = [
    "Monte Carlo standard errors (*_mc_se) come from the spread across independent replications; "
    "intervals or queries within one replication share a fit and are not independent",
    "coverage: theta(X) on 20 fixed evaluation queries x 3 prompt features per fit; mean_z2 is the mean "
    "squared standardized error (1 when standard errors are right)",
    "search_null: every departure from the incumbent is false; pick_reported_uplift_z is the reported "
    "uplift / se of each query's best non-incumbent candidate (truth 0)",
    "edits_fdr: fdr is the mean false discovery proportion (under the null: the chance of any discovery)",
]

if __name__ == "__main__":
    sys.exit(main())
