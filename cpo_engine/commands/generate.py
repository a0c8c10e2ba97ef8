"""`cpo generate`: run prompts x queries through an LLM, grade, and write resumable triplet shards."""

from __future__ import annotations

import argparse
from typing import Any

from cpo_engine.commands import add_common, flag_overrides

#: flag -> config key (``section.key``); a flag left unset keeps the config file's value.
FLAG_KEYS = {
    "queries": "queries", "prompts": "prompts", "out": "out", "run_id": "run_id", "grader": "grader",
    "gold_column": "gold_column",
    "executor": "executor", "max_queries": "max_queries", "shard_size": "shard_size",
    "backend": "backend.kind", "model": "backend.model", "base_url": "backend.openai.base_url",
    "api_key_env": "backend.openai.api_key_env", "concurrency": "backend.openai.max_concurrency",
    "replay": "backend.replay.path", "design": "design.kind", "k": "design.k",
    "samples": "design.samples_per_cell", "max_calls": "design.max_calls", "max_tokens_budget": "design.max_tokens",
    "temperature": "sampling.temperature", "max_tokens": "sampling.max_tokens", "seed": "sampling.seed",
    "position": "template.position", "mode": "template.mode", "ray_address": "ray.address",
}


def add_generate_args(p: argparse.ArgumentParser) -> None:
    """Flags shared by `cpo generate` and `jobs.generate` (each sets one config key)."""
    p.add_argument("--queries", help="queries table (query_id, query_text, gold column); default: bundled example")
    p.add_argument("--prompts", help="prompts table (prompt_id, prompt_text); default: prompts of --queries")
    p.add_argument("--out", help="run folder; rerunning the same command resumes it")
    p.add_argument("--run-id", help="run label stored in every row (default 'run')")
    # No argparse choices: the backend registry is the one list, and a wrong name fails with a suggestion.
    p.add_argument("--backend", help="LLM backend: openai (default), vllm or replay")
    p.add_argument("--model", help="model path/id (vllm) or model name sent to the server (openai)")
    p.add_argument("--base-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--api-key-env", help="environment variable holding the API key (the key is never logged)")
    p.add_argument("--concurrency", type=int, help="HTTP requests in flight (openai backend)")
    p.add_argument("--replay", help="triplet table to replay (replay backend)")
    p.add_argument("--grader", help="numeric[:strategy], exact, normalized, choice[:ABCD] (or mc), regex:PATTERN, "
                                    "module:function")
    p.add_argument("--gold-column", help="column of --queries holding the gold answer (default gold_answer)")
    p.add_argument("--design", choices=["full_grid", "random_k"], help="which cells to run (default full_grid)")
    p.add_argument("--k", type=int, help="prompts per query for --design random_k")
    p.add_argument("--samples", type=int, help="samples per (query, prompt) cell")
    p.add_argument("--max-calls", type=int, help="budget cap in LLM calls")
    p.add_argument("--max-tokens-budget", type=int, help="budget cap in projected tokens")
    p.add_argument("--max-queries", type=int, help="use only the first N queries")
    p.add_argument("--temperature", type=float, help="sampling temperature (default 0: greedy)")
    p.add_argument("--max-tokens", type=int, help="max generated tokens per call (default 256)")
    p.add_argument("--seed", type=int, help="base sampling seed (each row gets its own derived seed)")
    p.add_argument("--position", choices=["prefix", "suffix", "system"], help="where the prompt goes")
    p.add_argument("--mode", choices=["chat", "completion"], help="chat messages or one completion string")
    p.add_argument("--executor", choices=["local", "ray"], help="in-process loop or Ray Data pipeline")
    p.add_argument("--ray-address", help="Ray cluster to attach to (default: RAY_ADDRESS or a local Ray)")
    p.add_argument("--shard-size", type=int, help="rows per committed shard (the checkpoint unit)")
    p.add_argument("--overwrite", action="store_true", help="discard an existing run in --out")
    p.add_argument("--retry-errors", action="store_true", help="on resume, rerun the rows that failed")
    p.add_argument("--dry-run", action="store_true", help="print the plan and its projected cost, call nothing")
    add_common(p)


def config_from_args(args: argparse.Namespace) -> Any:
    """The GenerateConfig of `--config`, `--set` and the flags (flags win)."""
    from cpo_engine.config import load_config
    from cpo_engine.generation import GenerateConfig

    overrides = flag_overrides(args, FLAG_KEYS)
    for flag in ("overwrite", "retry_errors"):
        if getattr(args, flag, False):
            overrides.append(f"{flag}=true")
    return load_config(GenerateConfig, getattr(args, "config", None), overrides)


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

    cfg = config_from_args(args)
    summary = generate_triplets(cfg, dry_run=bool(getattr(args, "dry_run", False)))
    if not getattr(args, "dry_run", False):
        print(f"{summary.generated} rows generated ({summary.errors} errors), {summary.already_done} resumed, "
              f"{summary.rows_per_s:.2f} rows/s, {summary.tokens_per_s:.1f} tokens/s -> {summary.out}")
    return 0


__all__ = ["register", "add_generate_args", "config_from_args", "run"]
