"""`cpo loop`: the whole loop on a real LLM: seed prompts -> triplets -> fit -> search -> verify -> report.

On your task: --queries FILE (query_id, query_text, gold_answer; Parquet, CSV or JSONL) and --grader SPEC;
without --queries, the built-in task (--task addition), written as such a file. With no endpoint it starts
the packaged SmolLM2-135M-Instruct on a local llama.cpp server (extra `local-llm`), so it runs on a CPU in
minutes. Before the first LLM call it prints the most calls and tokens it will make; --max-calls N stops it
there (exit 3). Rerunning the same command resumes where it stopped, repeating no LLM call.
"""

from __future__ import annotations

import argparse

from cpo_engine.commands import add_common, config_from_args, flag, use_config
from cpo_engine.settings import LoopConfig


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("loop", help="the whole loop on a real LLM: generate -> fit -> search -> verify -> report",
                       description=__doc__.split("\n\n")[0].split(": ", 1)[1] + " " + __doc__.split("\n\n")[1])
    use_config(p, LoopConfig)
    flag(p, "out")
    flag(p, "task.queries")
    flag(p, "generation.grader")
    flag(p, "task.gold_column")
    flag(p, "task.kind", name="--task")
    flag(p, "task.n_train", name="--train-queries")
    flag(p, "task.n_verify", name="--verify-queries")
    flag(p, "prompts")
    flag(p, "rounds")
    flag(p, "endpoint")
    flag(p, "generation.backend.model", name="--llm-model")
    flag(p, "generation.backend.openai.api_key_env")
    flag(p, "max_calls")
    flag(p, "server.threads")
    flag(p, "server.parallel")
    flag(p, "verify.max_tokens")
    flag(p, "verify.samples")
    flag(p, "verify.top_k")
    flag(p, "seed")
    add_common(p)
    p.set_defaults(func=run)
    return p


#: Exit code of a loop stopped by --max-calls (2: a refusal, before any LLM call).
EXIT_BUDGET = 3


def run(args: argparse.Namespace) -> int:
    import sys

    from cpo_engine.exceptions import BudgetExhausted
    from cpo_engine.workflows.loop import run_loop

    cfg = config_from_args(args, LoopConfig)
    if cfg.task.queries and args.grader is None and not args.config and not any(
            o.startswith("generation.grader=") for o in args.overrides or []):
        print(f"note: no --grader: the answers are graded with '{cfg.generation.grader}'", file=sys.stderr)
    try:
        result = run_loop(cfg)
    except BudgetExhausted as exc:
        print(f"cpo loop: {exc}", file=sys.stderr)
        return EXIT_BUDGET
    print(f"loop folder: {result.out} (loop_report.md, loop_report.json)")
    return 0


__all__ = ["register", "run", "EXIT_BUDGET"]
