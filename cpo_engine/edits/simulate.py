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


__all__ = ["PHRASES", "simulate_grid"]
