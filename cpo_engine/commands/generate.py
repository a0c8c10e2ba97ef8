"""`cpo generate`: run prompts x queries through an LLM, grade, and write resumable triplet shards."""

from __future__ import annotations

import argparse
from typing import Any

from cpo_engine.commands import add_common, flag, use_config
from cpo_engine.commands import config_from_args as _config_from_args

def add_generate_args(p: argparse.ArgumentParser) -> None:
    """Flags shared by `cpo generate` and `jobs.generate`, each one GenerateConfig key (help and default from it)."""
    from cpo_engine.generation import GenerateConfig

    use_config(p, GenerateConfig)
    for key in ("queries", "prompts", "out", "run_id"):
        flag(p, key)
    # No argparse choices for --backend: the backend registry is the one list, and a wrong name fails with a suggestion.
    flag(p, "backend.kind", name="--backend")
    flag(p, "backend.model", name="--model")
    flag(p, "backend.openai.base_url")
    flag(p, "backend.openai.api_key_env")
    flag(p, "backend.openai.max_concurrency", name="--concurrency")
    flag(p, "backend.replay.path", name="--replay")
    flag(p, "grader")
    flag(p, "gold_column")
    flag(p, "design.kind", name="--design")
    flag(p, "design.k")
    flag(p, "design.samples_per_cell", name="--samples")
    flag(p, "design.max_calls")
    flag(p, "design.max_tokens", name="--max-tokens-budget")
    flag(p, "max_queries")
    flag(p, "sampling.temperature")
    flag(p, "sampling.max_tokens")
    flag(p, "sampling.seed")
    flag(p, "template.position")
    flag(p, "template.mode")
    flag(p, "executor")
    flag(p, "ray.address", name="--ray-address")
    flag(p, "shard_size")
    flag(p, "overwrite")
    flag(p, "retry_errors")
    p.add_argument("--dry-run", action="store_true", help="print the plan and its projected cost, call nothing")
    add_common(p)


def config_from_args(args: argparse.Namespace) -> Any:
    """The GenerateConfig of `--config`, `--set` and the flags (flags win)."""
    return _config_from_args(args)


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "generate", help="build (query, prompt, score) triplets with an LLM and a grader",
        description="Plan a design of queries x prompts x samples, print its projected cost, then generate, "
                    "grade and commit sharded Parquet with a manifest. Killed runs resume where they stopped.")
    add_generate_args(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from cpo_engine.generation import generate_triplets

    from cpo_engine.data.storage import is_remote

    cfg = config_from_args(args)
    dry_run = bool(getattr(args, "dry_run", False))
    if is_remote(cfg.out) and not dry_run:  # generated in a local staging folder (a rerun resumes there), then uploaded
        from cpo_engine.workflows.common import staged

        summary = staged(cfg, generate_triplets)
    else:
        summary = generate_triplets(cfg, dry_run=dry_run)
    if not getattr(args, "dry_run", False):
        print(f"{summary.generated} rows generated ({summary.errors} errors), {summary.already_done} resumed, "
              f"{summary.rows_per_s:.2f} rows/s, {summary.tokens_per_s:.1f} tokens/s -> {summary.out}")
    return 0


__all__ = ["register", "add_generate_args", "config_from_args", "run"]
