"""Monte Carlo check of the selection rule under a global null: no prompt has any effect.

Each replication draws a full grid of binary outcomes (queries x logged prompts) whose success
probability depends on the query only, fits the causal model with the given settings, re-references
it to the incumbent and scores the logged prompts plus ``n_candidates`` generated ones (points
between and around the logged prompts, as edits and rewrites land) for every query, exactly as
`cpo run` does (:meth:`CandidateScorer.from_selection`, :func:`pool_assign`). Every departure from the
incumbent is false, and every reported uplift should be 0 on average. ``bench/bench_calibration.py``
runs it at the run's defaults; a test runs a small version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cpo_engine.search.config import SelectionConfig


@dataclass(frozen=True)
class NullDesign:
    """Sizes of one null replication (defaults: the issue's setting at the run's PCA sizes)."""

    n_queries: int = 500
    n_prompts: int = 16
    d_x: int = 16
    """Query features (the run's query PCA size)."""
    d_t: int | None = None
    """Prompt features; None: n_prompts - 1 (the run's prompt PCA, capped at n_prompts - 1)."""
    n_candidates: int = 5000
    """Generated candidates scored beside the logged prompts."""
    spread: float = 0.3
    """Noise around the generated points, in units of the logged prompts' per-dimension spread."""
    effect: float = 0.0
    """0: the global null. Otherwise prompts do matter (a power check): the logit gains
    ``effect * x_q0 * t_p0 / sd(t_0)``, so which prompt is best depends on the query."""


def null_data(design: NullDesign, seed: int) -> dict[str, np.ndarray]:
    """Queries, logged prompts, generated candidates and a full grid of null outcomes."""
    rng = np.random.default_rng(seed)
    d_t = design.d_t or design.n_prompts - 1
    Xq = rng.normal(size=(design.n_queries, design.d_x))
    T = rng.normal(size=(design.n_prompts, d_t))
    T -= T.mean(0)
    a, b = rng.integers(0, design.n_prompts, size=(2, design.n_candidates))
    u = rng.uniform(-0.25, 1.25, size=(design.n_candidates, 1))
    gen = T[a] + u * (T[b] - T[a]) + design.spread * T.std(0) * rng.normal(size=(design.n_candidates, d_t))
    q = np.repeat(np.arange(design.n_queries), design.n_prompts)
    p = np.tile(np.arange(design.n_prompts), design.n_queries)
    logit = Xq @ rng.normal(size=design.d_x) * 0.5 / np.sqrt(design.d_x) + rng.normal(size=design.n_queries)
    gain = design.effect * Xq[:, 0] / T[:, 0].std()  # true logit gain per unit of t_0, per query
    eta = logit[q] + gain[q] * T[p, 0]  # under the null (effect 0) the prompt plays no part
    y = (rng.random(len(q)) < 1 / (1 + np.exp(-eta))).astype(float)
    return {"X": Xq, "T": T, "candidates": np.vstack([T, gen]), "q": q, "p": p, "y": y, "gain": gain}


def null_replication(design: NullDesign, seed: int, rules: dict[str, SelectionConfig],
                     causal: Any = None) -> dict[str, dict[str, float]]:
    """One replication: fit once, then apply every selection rule in ``rules``.

    Per rule: ``departures`` (share of queries whose searched choice is not the incumbent),
    ``pool_departures`` (the same among the logged prompts only), ``uplift_sum``/``uplift_z_sum``
    (reported uplift and uplift / se summed over departed queries: the truth is 0),
    ``static_excludes_0`` (the best static candidate's 95% interval excludes 0), ``pick_z_sum`` (the
    reported uplift / se of each query's best non-incumbent candidate, departed or not: the
    winner's curse of the estimate itself, measurable even when departures are rare).
    """
    from cpo_engine.causal.config import CausalConfig
    from cpo_engine.search.pool import pool_assign, referenced_head
    from cpo_engine.search.scoring import CandidateScorer

    d = null_data(design, seed)
    model = (causal or CausalConfig()).make_model(device="cpu", random_state=seed)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # diagnostics of a null fit are not the point here
        model.fit(d["y"], d["T"][d["p"]], X=d["X"][d["q"]], groups=d["q"])
    out = {}
    texts = [""] * len(d["candidates"])
    for name, rule in rules.items():
        head, inc = referenced_head(model.linear_head(), d["X"], d["T"], rule.reference)
        scorer = CandidateScorer.from_selection(head, d["X"], lambda t: None, rule, d["T"], device="cpu")
        batch = scorer.score_T(texts, d["candidates"], k=2)
        left = batch.topk.indices[:, 0] != inc
        eff, se = batch.topk.effect[left, 0], batch.topk.se[left, 0]
        # the search's pick on every query: its best candidate other than the incumbent
        j = np.where(left, 0, 1)
        rows = np.arange(len(j))
        pick_z = batch.topk.effect[rows, j] / batch.topk.se[rows, j]
        chosen = batch.topk.indices[:, 0]
        true_up = d["gain"] * (d["candidates"][chosen, 0] - d["T"][inc, 0])  # logit scale, 0 under the null
        pool = pool_assign(scorer, [str(i) for i in range(len(d["T"]))], texts[:len(d["T"])], T_pool=d["T"],
                           incumbent=inc)
        best = int(np.argmax(batch.static_objective))
        s_eff, s_se = scorer.report_head.static_effect(d["X"], d["candidates"][best:best + 1])
        out[name] = {"departures": float(left.mean()), "pool_departures": float(np.mean(pool.choice != inc)),
                     "n_departed": int(left.sum()), "uplift_sum": float(eff.sum()),
                     "uplift_z_sum": float((eff / np.where(se > 0, se, np.nan)).sum()),
                     "static_excludes_0": float(abs(s_eff[0]) > 1.959964 * s_se[0]) if best != inc else 0.0,
                     "pick_z_sum": float(np.nansum(pick_z)), "n_pick": int(np.isfinite(pick_z).sum()),
                     "true_uplift": float(true_up.mean()), "harmful": int((true_up[left] < 0).sum()),
                     "multiplier": scorer.z}
    return out


def summarize(reps: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Means over replications with Monte Carlo standard errors (replications are independent;
    queries within one are not, so errors come from the spread across replications)."""
    out = {}
    for name in reps[0]:
        rows = [r[name] for r in reps]
        dep = np.array([r["departures"] for r in rows])
        pool = np.array([r["pool_departures"] for r in rows])
        stat = np.array([r["static_excludes_0"] for r in rows])
        n = sum(r["n_departed"] for r in rows)
        z = np.array([r["uplift_z_sum"] for r in rows])
        k = np.array([r["n_departed"] for r in rows])
        out[name] = {
            "replications": len(rows), "multiplier": rows[0]["multiplier"],
            "false_departures": float(dep.mean()), "false_departures_mc_se": _se(dep),
            "pool_false_departures": float(pool.mean()), "pool_false_departures_mc_se": _se(pool),
            "departed_queries": int(n),
            "mean_reported_uplift_z": float(z.sum() / n) if n else float("nan"),
            "mean_reported_uplift_z_mc_se": _ratio_se(z, k) if n else float("nan"),
            "mean_reported_uplift": float(sum(r["uplift_sum"] for r in rows) / n) if n else float("nan"),
            "best_static_ci_excludes_0": float(stat.mean()), "best_static_ci_excludes_0_mc_se": _se(stat),
            "mean_true_uplift": float(np.mean([r["true_uplift"] for r in rows])),
            "harmful_share_of_departures": _ratio(rows, "harmful", "n_departed"),
            "pick_reported_uplift_z": _ratio(rows, "pick_z_sum", "n_pick"),
            "pick_reported_uplift_z_mc_se": _ratio_se(np.array([r["pick_z_sum"] for r in rows]),
                                                      np.array([r["n_pick"] for r in rows])),
        }
    return out


def _ratio(rows: list[dict], num: str, den: str) -> float:
    d = sum(r[den] for r in rows)
    return float(sum(r[num] for r in rows) / d) if d else float("nan")


def _se(x: np.ndarray) -> float:
    return float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")


def _ratio_se(num: np.ndarray, den: np.ndarray) -> float:
    """Delta-method (cluster) standard error of sum(num) / sum(den) over replications."""
    r = num.sum() / den.sum()
    resid = num - r * den
    return float(np.sqrt((resid**2).sum()) / den.sum()) if den.sum() > 0 else float("nan")


#: The rules compared: the run's default and the two it replaces.
RULES: dict[str, SelectionConfig] = {
    "default (simultaneous, split)": SelectionConfig(),
    "simultaneous, one fit": SelectionConfig(split=False),
    "pointwise, one fit (before)": SelectionConfig(simultaneous=False, split=False),
}


def null_study(reps: int, design: NullDesign | None = None, seed: int = 0,
               rules: dict[str, SelectionConfig] | None = None, causal: Any = None) -> dict[str, Any]:
    """``reps`` null replications (seeds ``seed .. seed + reps - 1``), summarized per rule."""
    design = design or NullDesign()
    runs = [null_replication(design, seed + r, rules or RULES, causal) for r in range(reps)]
    return {"design": {**design.__dict__, "d_t": design.d_t or design.n_prompts - 1}, "seed": seed,
            "rules": summarize(runs)}


__all__ = ["NullDesign", "RULES", "null_data", "null_replication", "null_study", "summarize"]
