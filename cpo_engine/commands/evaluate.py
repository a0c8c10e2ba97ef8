"""`cpo evaluate`: the causal reward model vs baselines on a full outcome grid with injected
confounding; writes evaluation.json, evaluation.md and evaluation.png."""

from __future__ import annotations

import argparse

from cpo_engine.commands import add_causal_flags, add_common, add_data_flags, config_from_args, flag


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("evaluate", help="evaluate causal vs non-causal reward models on a full grid",
                       description="Split queries into train/test, draw observational logs from the train "
                                   "queries with a known (confounded) logging policy, fit every method on the "
                                   "logs and score prompt rankings and policy value on the test queries "
                                   "against the grid's cell means.")
    add_data_flags(p, positional=False)
    flag(p, "--out", "out", "folder for evaluation.json / .md / .png")
    flag(p, "--confounding", "evaluation.confounding", "logging policy", choices=["none", "observable", "latent"])
    flag(p, "--strength", "evaluation.strength",
         "confounding strength (logit scale); negative: long/hard queries get short prompts", type=float)
    flag(p, "--logged-per-query", "evaluation.logged_per_query", "logged prompts per train query", type=int)
    flag(p, "--seeds", "evaluation.seeds", "repetitions for the 95%% CIs", type=int)
    flag(p, "--first-seed", "evaluation.first_seed", "seed of the first repetition", type=int)
    flag(p, "--test-fraction", "evaluation.test_fraction", "share of queries held out", type=float)
    flag(p, "--exploration", "evaluation.exploration",
         "uniform share mixed into the logging policy (a propensity floor of exploration / n_prompts)", type=float)
    flag(p, "--ope-logged-per-query", "evaluation.ope_logged_per_query",
         "logged prompts per held-out query draw in the off-policy evaluation check", type=int)
    flag(p, "--train-queries", "evaluation.train_queries", "fit on at most this many training queries", type=int)
    flag(p, "--min-propensity", "ope.min_propensity", "propensity clipping floor of the off-policy estimators",
         type=float)
    flag(p, "--query-text-features", "evaluation.query_text_features", "append query length and number count to X",
         action="store_const", const=True)
    flag(p, "--forest", "evaluation.with_forest", "also fit econml CausalForestDML (slow)", action="store_const",
         const=True)
    flag(p, "--no-ope", "evaluation.ope", "skip the off-policy evaluation check", action="store_const", const=False)
    flag(p, "--sweep", "sweep.axes", "data-budget curves instead of the plain evaluation: comma-separated axes from "
         "train_queries, logged_per_query, query_components, prompt_components")
    flag(p, "--sweep-seeds", "sweep.seeds", "repetitions per sweep point", type=int)
    flag(p, "--prompt-components", "pca.prompt_components",
         "prompt PCA size (default 32, capped at n_prompts - 1)", type=int)
    add_causal_flags(p)
    add_common(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from cpo_engine.causal.harness import table_markdown
    from cpo_engine.causal.ope_validation import ope_markdown
    from cpo_engine.workflows import EvaluateConfig
    from cpo_engine.workflows.evaluate import evaluate

    result = evaluate(config_from_args(args, EvaluateConfig))
    if "curves" in result:
        from cpo_engine.causal.budget import budget_markdown

        print(budget_markdown(result))
    else:
        print(table_markdown(result) + ope_markdown(result.get("ope", {})))
    print(f"wrote {', '.join(str(p) for p in result['paths'].values())}")
    return 0
