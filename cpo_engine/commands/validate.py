"""`cpo validate DATA`: check a triplet table against the contract and summarize it."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pyarrow.compute as pc


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("validate", help="check a triplet table (Parquet file/folder, CSV, JSONL)",
                       description="Validate a triplet table; on a problem, print where it is and how to fix it, "
                                   "and exit 2.")
    p.add_argument("data", help="triplet table: .parquet file or folder of shards, .csv/.tsv, .jsonl (chat-format "
                                "records too); a local path or a URI (s3://bucket/logs.parquet, gs://...)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    from cpo_engine.commands import add_table_flags, use_config
    from cpo_engine.data.config import DataConfig

    use_config(p, DataConfig)
    add_table_flags(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from cpo_engine.commands import config_from_args
    from cpo_engine.data import read_triplets
    from cpo_engine.data.config import DataConfig

    cfg = config_from_args(args, DataConfig)
    table = read_triplets(args.data, cfg.columns, cfg.score_field)
    summary = summarize(table)
    print(json.dumps(summary, indent=2) if args.json else _text(args.data, summary))
    return 0


def summarize(table) -> dict:
    cells = table.group_by(["query_id", "prompt_id"]).aggregate([("score", "count")])
    n_q, n_p = len(pc.unique(table["query_id"])), len(pc.unique(table["prompt_id"]))
    out = {"rows": table.num_rows, "queries": n_q, "prompts": n_p, "cells": cells.num_rows,
           "grid_coverage": cells.num_rows / (n_q * n_p),
           "samples_per_cell_mean": float(np.mean(cells["score_count"].to_numpy())),
           "score_mean": float(pc.mean(table["score"]).as_py())}
    from cpo_engine.data.validate import score_scale

    scale = score_scale(table)
    out.update(score_kind=scale["kind"], score_min=scale["min"], score_max=scale["max"])
    if "task" in table.column_names:
        out["tasks"] = sorted(x for x in pc.unique(table["task"]).to_pylist() if x is not None)
    return out


def _text(source: str, s: dict) -> str:
    lines = [f"OK {source}: {s['rows']:,} rows, {s['queries']:,} queries x {s['prompts']:,} prompts",
             f"  cells {s['cells']:,} ({s['grid_coverage']:.1%} of the full grid), "
             f"{s['samples_per_cell_mean']:.2f} samples per cell, mean score {s['score_mean']:.3f}"]
    lines.append(f"  scores: {s['score_kind']} in [{s['score_min']:g}, {s['score_max']:g}] (effects and uplift are "
                 "reported in these units)")
    if "tasks" in s:
        lines.append(f"  tasks: {', '.join(s['tasks'])}")
    return "\n".join(lines)
