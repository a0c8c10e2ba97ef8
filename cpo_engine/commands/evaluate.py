"""`cpo evaluate`: the causal reward model vs baselines on a full outcome grid with injected
confounding; writes evaluation.json, evaluation.md and evaluation.png."""

from __future__ import annotations

import argparse

from cpo_engine.commands import add_causal_flags, add_common, add_data_flags, config_from_args, flag, use_config
from cpo_engine.settings import EvaluateConfig


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("evaluate", help="evaluate causal vs non-causal reward models on a full grid",
                       description="Split queries into train/test, draw observational logs from the train "
                                   "queries with a known (confounded) logging policy, fit every method on the "
                                   "logs and score prompt rankings and policy value on the test queries "
                                   "against the grid's cell means.")
    use_config(p, EvaluateConfig)
    add_data_flags(p, positional=False)
    flag(p, "out")
    flag(p, "evaluation.confounding")
    flag(p, "evaluation.strength")
    flag(p, "evaluation.logged_per_query")
    flag(p, "evaluation.seeds")
    flag(p, "evaluation.first_seed")
    flag(p, "evaluation.test_fraction")
    flag(p, "evaluation.exploration")
    flag(p, "evaluation.ope_logged_per_query")
    flag(p, "evaluation.train_queries")
    flag(p, "ope.min_propensity")
    flag(p, "evaluation.query_text_features", action="store_const", const=True)
    flag(p, "evaluation.with_forest", name="--forest", action="store_const", const=True)
    flag(p, "evaluation.ope", name="--no-ope", action="store_const", const=False)
    flag(p, "sweep.axes", name="--sweep")
    flag(p, "sweep.seeds", name="--sweep-seeds")
    flag(p, "pca.prompt_components", type=int)
    add_causal_flags(p)
    add_common(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from cpo_engine.workflows.evaluate import evaluate

    result = evaluate(config_from_args(args, EvaluateConfig))
    print(result.markdown())
    print(f"wrote {', '.join(str(p) for p in result.paths.values())}")
    return 0
