"""`cpo edits --data DATA --out DIR`: which prompt edits help on which task, and an edit prior."""

from __future__ import annotations

import argparse

from cpo_engine.commands import add_common, apply_positional_data, config_from_args, flag, use_config
from cpo_engine.settings import EditsJobConfig


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "edits", help="edit-level causal analysis: edit-family x task effects, heatmap, edit prior",
        description="Estimate the effect of prompt-edit families (step-by-step, persona, complexity, ...) on the "
                    "score per task, from a triplet table (every ordered pair of prompts on shared queries, or "
                    "parent_id links) or an optimizer trajectory (prompt, parent, task, model, score). Writes "
                    "edit_effects.csv/.md, surface_effects.csv, motif_effects.csv, heterogeneity.csv, "
                    "edit_heatmap.png, edit_prior.json, summary.json and manifest.json to --out.")
    use_config(p, EditsJobConfig)
    p.add_argument("data_pos", nargs="?", metavar="DATA", help="same as --data")
    flag(p, "data")
    flag(p, "out")
    flag(p, "kind")
    flag(p, "pairs.pairs")
    flag(p, "filter", action="append", metavar="COL=V1,V2")
    flag(p, "score_column")
    flag(p, "effects.learner", type=str)
    flag(p, "effects.cv")
    flag(p, "effects.inference")
    flag(p, "effects.fdr")
    flag(p, "effects.min_edits")
    flag(p, "effects.min_prompts")
    flag(p, "pairs.max_edits_per_cell")
    flag(p, "effects.by_model", name="--pool-models", action="store_const", const=False)
    flag(p, "prior.temperature")
    flag(p, "seed")
    add_common(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from cpo_engine.workflows.edits import analyze_edits_job

    apply_positional_data(args)
    cfg = config_from_args(args, EditsJobConfig)
    result = analyze_edits_job(cfg)
    report = result.report
    fam = report.families
    est = fam[fam["status"] == "estimated"]
    print(f"{report.config['n_edits']:,} edits, {report.config['n_units']:,} paired units; "
          f"{len(est)} family x cell effects estimated, {int(est['significant'].sum())} significant "
          f"(BH q <= {cfg.effects.fdr:g})")
    for r in est[est["significant"]].sort_values("effect").itertuples():
        print(f"  {r.task:<12} {r.family:<17} {r.effect:+.4f}  [{r.ci_low:+.4f}, {r.ci_high:+.4f}]  q={r.q_value:.2g}")
    if est.empty:
        print("  no family could be estimated: each needs >= --min-edits edits and >= --min-prompts prompts carrying "
              "it in a task (see the status column of edit_effects.csv)")
    het = report.heterogeneity
    for r in het[het["heterogeneous"]].itertuples():
        print(f"  {r.family} differs across tasks (Cochran Q={r.Q:.1f}, df={r.df:.0f}, q={r.q_value:.2g})")
    print(f"wrote {', '.join(p.name for p in result.paths.values())} -> {result.out}")
    return 0
