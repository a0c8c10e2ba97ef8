"""Synthetic triplets with known edit-family effects, to check the analysis recovers them.

Prompts are a base instruction plus any subset of one phrase per chosen family; a query's success
probability is its own difficulty plus the sum of the effects of the families its prompt contains
(per task), so the true effect of an edit that adds family F on task t is exactly
``effects[t][F]`` (before clipping the probability to [0.02, 0.98]).
"""

from __future__ import annotations

from itertools import product

import numpy as np
import pyarrow as pa

#: One clear, lexicon-independent-looking phrase per family (each detected as exactly that family).
PHRASES: dict[str, str] = {
    "step_by_step": "Let's think step by step.",
    "persona": "You are an expert mathematician.",
    "verification": "Verify the result before you answer.",
    "meta_instruction": "Follow these instructions exactly.",
    "decomposition": "Decompose the problem into sub-problems.",
    "answer_format": "Respond with a single number.",
}


def simulate_grid(
    effects: dict[str, dict[str, float]],
    n_queries: int = 200,
    n_samples: int = 1,
    base: str = "Solve the problem.",
    prompt_sd: float = 0.0,
    seed: int = 0,
) -> pa.Table:
    """Full-grid triplets: every prompt (base + a subset of family phrases) on every query of every task.

    Parameters
    ----------
    effects : dict
        ``{task: {family: effect}}``; the families (keys of :data:`PHRASES`) must be the same for
        every task. 2^k prompts for k families.
    n_queries : int
        Queries per task (difficulty uniform in [0.2, 0.8]).
    n_samples : int
        Bernoulli samples per (query, prompt) cell.
    prompt_sd : float
        Standard deviation of a per-prompt effect that no family explains (idiosyncratic wording);
        0 makes the families the whole story.
    """
    fams = sorted(next(iter(effects.values())))
    rng = np.random.default_rng(seed)
    subsets = list(product([0, 1], repeat=len(fams)))
    texts = [" ".join([base] + [PHRASES[f] for f, on in zip(fams, s) if on]) for s in subsets]
    cols: dict[str, list] = {k: [] for k in ("task", "query_id", "query_text", "prompt_id", "prompt_text",
                                             "score", "sample")}
    for task, eff in effects.items():
        beta = np.array([eff[f] for f in fams])
        diff = rng.uniform(0.2, 0.8, n_queries)
        own = rng.normal(0.0, prompt_sd, len(subsets)) if prompt_sd > 0 else np.zeros(len(subsets))
        prob = np.clip(diff[:, None] + (np.array(subsets) @ beta + own)[None, :], 0.02, 0.98)
        for s in range(n_samples):
            y = (rng.random(prob.shape) < prob).astype(float)
            for q, j in product(range(n_queries), range(len(texts))):
                cols["task"].append(task)
                cols["query_id"].append(f"{task}-q{q}")
                cols["query_text"].append(f"Question {q} of {task}: what is {q} + {q % 7}?")
                cols["prompt_id"].append(f"p{j}")
                cols["prompt_text"].append(texts[j])
                cols["score"].append(y[q, j])
                cols["sample"].append(s)
    return pa.table(cols)


#: Known effects of the calibration study (docs/edits.md): two tasks, one effect flips sign.
STUDY_EFFECTS: dict[str, dict[str, float]] = {
    "math": {"step_by_step": 0.15, "persona": 0.0, "meta_instruction": -0.12},
    "logic": {"step_by_step": -0.10, "persona": 0.0, "meta_instruction": 0.0},
}


def calibration_study(reps: int = 200, prompt_sd: float = 0.0, n_queries: int = 150, seed: int = 5000,
                      null: bool = False, inference: str = "prompt_jackknife") -> dict[str, float]:
    """Monte Carlo check of :func:`cpo_engine.edits.analyze_edits` on :func:`simulate_grid` data.

    Returns the 95% interval coverage of the true effects with query-clustered and with the
    reported intervals (t quantiles under the jackknife), the share of non-zero effects found
    significant with the right sign, and the false discovery rate (mean share of true-zero cells
    among the significant ones; with ``null=True`` every effect is 0, so it is the chance of any
    false discovery) with the reported and with the query-clustered q-values, each with its Monte
    Carlo standard error (``*_mc_se``, from the spread across replications). Families without a true
    effect (e.g. ``conciseness`` from the size rule) count as true zeros.
    """
    from scipy import stats

    from cpo_engine.edits.analysis import EffectConfig, analyze_edits
    from cpo_engine.edits.pairs import units_from_triplets

    effects = {t: dict.fromkeys(e, 0.0) for t, e in STUDY_EFFECTS.items()} if null else STUDY_EFFECTS
    z = float(stats.norm.ppf(0.975))
    cov_q, cov, power, fdp, fdp_q = [], [], [], [], []
    for r in range(reps):
        table = simulate_grid(effects, n_queries=n_queries, prompt_sd=prompt_sd, seed=seed + r)
        fam = analyze_edits(units_from_triplets(table), EffectConfig(cv=2, motif_top_k=0, inference=inference)).families
        fam = fam[fam["status"] == "estimated"]
        truth = np.array([effects[t].get(f, 0.0) for t, f in zip(fam["task"], fam["family"])])
        err = np.abs(fam["effect"].to_numpy() - truth)
        cov_q.append(np.mean(err <= z * fam["se_query"].to_numpy()))
        cov.append(np.mean((fam["ci_low"].to_numpy() <= truth) & (truth <= fam["ci_high"].to_numpy())))
        sig, eff = fam["significant"].to_numpy(), fam["effect"].to_numpy()
        power += list((np.sign(eff) == np.sign(truth))[truth != 0] & sig[truth != 0])
        fdp.append(float(sig[truth == 0].sum()) / max(1, int(sig.sum())))
        sig_q = (fam["q_value_query"] <= 0.05).to_numpy()
        fdp_q.append(float(sig_q[truth == 0].sum()) / max(1, int(sig_q.sum())))
    out = {"reps": reps, "prompt_sd": prompt_sd, "null": null, "inference": inference, "seed": seed,
           "n_queries": n_queries}
    for name, v in (("coverage_query", cov_q), ("coverage_reported", cov), ("fdr", fdp), ("fdr_query", fdp_q)):
        v = np.asarray(v, dtype=float)
        out[name], out[name + "_mc_se"] = float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else np.nan
    out["power_right_sign"] = float(np.mean(power)) if power else float("nan")
    return out


if __name__ == "__main__":  # python -m cpo_engine.edits.simulate [reps]
    import json
    import sys

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    for sd in (0.0, 0.03):
        for is_null in (True, False):
            print(json.dumps({"null": is_null, **calibration_study(n, sd, null=is_null)}))


__all__ = ["PHRASES", "STUDY_EFFECTS", "calibration_study", "simulate_grid"]
