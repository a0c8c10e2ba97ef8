"""`cpo fit`: fit the causal reward model on triplets and save it (no pickle) with diagnostics."""

from __future__ import annotations

import argparse
from pathlib import Path

from cpo_engine.commands import add_common, config_from_args


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("fit", help="fit the causal reward model (cross-fitted DML) and save it",
                       description="Embed queries and prompts, fit CausalRewardModel with folds grouped by "
                                   "query, print its diagnostics and save model, features and PCA states.")
    p.add_argument("data", nargs="?", help="triplet table (default: the bundled example)")
    p.add_argument("--out", required=True, help="output folder (model/, features/, diagnostics.json)")
    add_model_args(p)
    p.add_argument("--backend", default="serial", choices=["serial", "ray"],
                   help="run cross-fitting folds in-process or as Ray tasks (default serial)")
    p.add_argument("--keep-residuals", action="store_true",
                   help="also save out-of-fold residuals so refit_final works after loading")
    add_common(p)
    p.set_defaults(func=run)
    return p


def add_model_args(p: argparse.ArgumentParser) -> None:
    """Flags of the causal model shared by `fit` and `evaluate`."""
    p.add_argument("--featurizer", default="linear", choices=["constant", "linear", "poly2"],
                   help="phi(X) of theta(X) = B^T phi(X) (default linear: [1, X])")
    p.add_argument("--model-y", default="ridge", help="nuisance for E[Y|X]: ridge, mlp, hgb, lgbm")
    p.add_argument("--model-t", default="ridge", help="nuisance for E[T|X]: ridge, mlp, hgb, lgbm")
    p.add_argument("--cv", type=int, default=5, help="cross-fitting folds, grouped by query (default 5)")
    p.add_argument("--final-alpha", type=_alpha, default="cv",
                   help="penalty on effect heterogeneity: a number >= 0 (0: OLS, econml's LinearDML) or "
                        "'cv' (default: chosen by grouped cross-validation)")


def _alpha(text: str) -> "float | str":
    if text == "cv":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number >= 0 or 'cv', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from cpo_engine.causal import CausalRewardModel, representation_provenance
    from cpo_engine.pipeline import embed_stage, load_data, write_features
    from cpo_engine.utils import atomic_write_json

    cfg = config_from_args(args)
    table, info = load_data(cfg.data)
    reps = embed_stage(table, cfg, show_progress=True)
    out = Path(args.out)
    Y = np.asarray(table.column("score").to_numpy(zero_copy_only=False), dtype=np.float64)
    w = table.column("weight").to_numpy(zero_copy_only=False) if "weight" in table.column_names else None
    model = CausalRewardModel(model_y=args.model_y, model_t=args.model_t, featurizer=args.featurizer,
                              cv=args.cv, final_alpha=args.final_alpha, backend=args.backend,
                              device=cfg.embed.device, random_state=cfg.seed)
    model.fit(Y, reps.T[reps.row_prompt], X=reps.X[reps.row_query], groups=reps.row_query, sample_weight=w)
    write_features(reps, out / "features")
    prov = representation_provenance(reps) | {"data": info}
    model.save(out / "model", prov, keep_residuals=args.keep_residuals)
    atomic_write_json(out / "diagnostics.json", model.diagnostics_.to_dict())
    print(model.diagnostics_.summary())
    print(f"saved model to {out / 'model'}")
    return 0
