"""`cpo evaluate`: the causal reward model vs baselines on a full outcome grid with injected
confounding; writes evaluation.json, evaluation.md and evaluation.png."""

from __future__ import annotations

import argparse
from pathlib import Path

from cpo_engine.commands import add_common, config_from_args
from cpo_engine.commands.fit import add_model_args


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("evaluate", help="evaluate causal vs non-causal reward models on a full grid",
                       description="Split queries into train/test, draw observational logs from the train "
                                   "queries with a known (confounded) logging policy, fit every method on the "
                                   "logs and score prompt rankings and policy value on the test queries "
                                   "against the grid's cell means.")
    p.add_argument("--data", help="full-grid triplet table (default: the bundled example)")
    p.add_argument("--out", required=True, help="folder for evaluation.json / .md / .png")
    p.add_argument("--confounding", default="observable", choices=["none", "observable", "latent"],
                   help="logging policy (default observable)")
    p.add_argument("--strength", type=float, default=2.0, help="confounding strength (logit scale, default 2); negative flips the direction: long/hard "
                        "queries then get short prompts")
    p.add_argument("--logged-per-query", type=int, default=4, help="logged prompts per train query (default 4)")
    p.add_argument("--seeds", type=int, default=5, help="repetitions for the 95%% CIs (default 5)")
    p.add_argument("--test-fraction", type=float, default=0.3, help="share of queries held out (default 0.3)")
    p.add_argument("--query-text-features", action="store_true",
                   help="append query length and number count to X")
    p.add_argument("--forest", action="store_true", help="also fit econml CausalForestDML (slow)")
    p.add_argument("--prompt-components", type=int, default=None,
                   help="prompt PCA size (default: n_prompts - 1, so every prompt's own effect is "
                        "representable by a linear function of T)")
    add_model_args(p)
    add_common(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from cpo_engine.causal import EvaluationConfig, evaluate, write_evaluation
    from cpo_engine.causal.harness import table_markdown
    from cpo_engine.pipeline import embed_stage, load_data

    cfg = config_from_args(args)
    ecfg = EvaluationConfig(
        confounding=args.confounding, strength=args.strength, logged_per_query=args.logged_per_query,
        seeds=args.seeds, first_seed=cfg.seed, test_fraction=args.test_fraction,
        featurizer=args.featurizer, model_y=args.model_y, model_t=args.model_t,
        final_alpha=args.final_alpha, cv=args.cv, query_text_features=args.query_text_features,
        with_forest=args.forest)
    ecfg.validate()
    table, info = load_data(cfg.data)
    cfg.pca.prompt_components = args.prompt_components  # None: all components (n_prompts - 1)
    reps = embed_stage(table, cfg, show_progress=True)
    result = evaluate(table, ecfg, representations=reps, progress=print,
                      checkpoint_dir=Path(args.out) / "seeds")
    result["settings"]["data"] = info
    paths = write_evaluation(result, Path(args.out))
    print(table_markdown(result))
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0
