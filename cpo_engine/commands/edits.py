"""`cpo edits --data DATA --out DIR`: which prompt edits help on which task, and an edit prior."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "edits", help="edit-level causal analysis: edit-family x task effects, heatmap, edit prior",
        description="Estimate the effect of prompt-edit families (step-by-step, persona, complexity, ...) on the "
                    "score per task, from a triplet table (every ordered pair of prompts on shared queries, or "
                    "parent_id links) or an optimizer trajectory (prompt, parent, task, model, score). Writes "
                    "edit_effects.csv/.md, surface_effects.csv, motif_effects.csv, heterogeneity.csv, "
                    "edit_heatmap.png, edit_prior.json and summary.json to --out.")
    p.add_argument("data_pos", nargs="?", metavar="DATA", help="same as --data")
    p.add_argument("--data", help="triplet table or trajectory (.parquet file/folder, .csv, .jsonl)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--kind", choices=["auto", "triplets", "trajectory"], default="auto",
                   help="input kind (default: triplets when the triplet columns are present)")
    p.add_argument("--pairs", choices=["auto", "all", "lineage"], default="auto",
                   help="edits: every ordered prompt pair, parent links only, or auto (links when present)")
    p.add_argument("--filter", action="append", default=[], metavar="COL=V1,V2",
                   help="keep rows whose COL is one of the values (repeatable), e.g. --filter task=svamp,gsm8k")
    p.add_argument("--score-column", help="column holding the score (default: score or an alias)")
    p.add_argument("--learner", default="linear", help="nuisance learner: linear (default), ridge, hgb, lgbm")
    p.add_argument("--cv", type=int, default=5, help="cross-fitting folds, grouped by query (default 5)")
    p.add_argument("--inference", choices=["prompt_jackknife", "query"], default="prompt_jackknife",
                   help="standard errors: max(clustered by query, delete-one-prompt jackknife) (default), "
                        "or clustered by query only (conditional on the prompts edited)")
    p.add_argument("--fdr", type=float, default=0.05, help="Benjamini-Hochberg level (default 0.05)")
    p.add_argument("--min-edits", type=int, default=2, help="distinct edits a family needs in a cell (default 2)")
    p.add_argument("--min-prompts", type=int, default=2,
                   help="distinct prompts that must carry a family in a cell (default 2)")
    p.add_argument("--max-edits-per-cell", type=int, default=5000,
                   help="cap on edits per task x model, seeded subsample (default 5000; 0 = no cap)")
    p.add_argument("--pool-models", action="store_true", help="pool models within a task")
    p.add_argument("--temperature", type=float, default=0.05,
                   help="edit prior: effect that multiplies a weight by e (default 0.05)")
    p.add_argument("--seed", type=int, default=0, help="seed for folds and subsampling")
    p.set_defaults(func=run)
    return p


def _filters(specs: list[str]) -> dict[str, list[str]]:
    from cpo_engine.exceptions import ConfigError

    out: dict[str, list[str]] = {}
    for spec in specs:
        col, sep, vals = spec.partition("=")
        if not sep or not col or not vals:
            raise ConfigError(f"--filter expects COL=V1,V2, got {spec!r}")
        out.setdefault(col.strip(), []).extend(v.strip() for v in vals.split(","))
    return out


def _edits_folder(out: str) -> str:
    """``--out`` as a writable folder that is not another workflow's run folder (whose summary.json the
    analysis would overwrite)."""
    import json
    from pathlib import Path

    from cpo_engine.exceptions import ConfigError
    from cpo_engine.workflows.common import MANIFEST, usable_folder

    folder = usable_folder(out)
    manifest = Path(folder) / MANIFEST
    if manifest.is_file():
        try:
            workflow = json.loads(manifest.read_text()).get("workflow", "cpo")
        except (ValueError, AttributeError):
            workflow = "cpo"
        if workflow == "edits":  # an earlier edit analysis: this one replaces it
            return str(folder)
        raise ConfigError(f"--out {out} is a `cpo {workflow}` run folder ({MANIFEST}): the edit analysis would "
                          f"overwrite its summary.json\n  fix: pass another folder, e.g. --out {Path(out) / 'edits'}")
    return str(folder)


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from cpo_engine.edits import EffectConfig, PairConfig, PriorConfig, analyze, write_report
    from cpo_engine.exceptions import ConfigError

    data = args.data or args.data_pos
    if not data:
        raise ConfigError("no input: pass --data PATH (a triplet table or an optimizer trajectory)")
    pair_cfg = PairConfig(pairs=args.pairs, max_edits_per_cell=args.max_edits_per_cell or None, seed=args.seed)
    eff_cfg = EffectConfig(learner=args.learner, cv=args.cv, inference=args.inference, fdr=args.fdr,
                           min_edits=args.min_edits, min_prompts=args.min_prompts, by_model=not args.pool_models,
                           random_state=args.seed)
    out = _edits_folder(args.out)  # before the analysis: a wrong --out is refused in seconds, not after it
    from cpo_engine.utils import FolderLock

    with FolderLock(out, "edit analysis folder", fix=" or pass another --out"):
        report, prior = analyze(data, args.kind, pair_cfg, eff_cfg, PriorConfig(temperature=args.temperature),
                                _filters(args.filter), args.score_column)
        prior["meta"]["source"] = str(data)
        paths = write_report(report, prior, out, source=str(data))
        from cpo_engine.workflows.common import write_manifest

        write_manifest(out, "edits", {"data": str(data), "kind": args.kind, "pairs": asdict(pair_cfg),
                                      "effects": asdict(eff_cfg), "temperature": args.temperature,
                                      "filter": args.filter, "score_column": args.score_column}, paths)
    fam = report.families
    est = fam[fam["status"] == "estimated"]
    print(f"{report.config['n_edits']:,} edits, {report.config['n_units']:,} paired units; "
          f"{len(est)} family x cell effects estimated, {int(est['significant'].sum())} significant "
          f"(BH q <= {args.fdr:g})")
    for r in est[est["significant"]].sort_values("effect").itertuples():
        print(f"  {r.task:<12} {r.family:<17} {r.effect:+.4f}  [{r.ci_low:+.4f}, {r.ci_high:+.4f}]  q={r.q_value:.2g}")
    if est.empty:
        print("  no family could be estimated: each needs >= --min-edits edits and >= --min-prompts prompts carrying "
              "it in a task (see the status column of edit_effects.csv)")
    het = report.heterogeneity
    for r in het[het["heterogeneous"]].itertuples():
        print(f"  {r.family} differs across tasks (Cochran Q={r.Q:.1f}, df={r.df:.0f}, q={r.q_value:.2g})")
    print(f"wrote {', '.join(p.name for p in paths.values())} -> {args.out}")
    return 0
