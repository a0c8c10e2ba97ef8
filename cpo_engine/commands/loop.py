"""`cpo loop`: the whole loop on a real LLM: seed prompts -> triplets -> fit -> search -> verify -> report.

On your task: --queries FILE (query_id, query_text, gold_answer; Parquet, CSV or JSONL) and --grader SPEC;
without --queries, the built-in task (--task addition), written as such a file. With no endpoint it starts
the packaged SmolLM2-135M-Instruct on a local llama.cpp server (extra `local-llm`), so it runs on a CPU in
minutes. Before the first LLM call it prints the most calls and tokens it will make; --max-calls N stops it
there (exit 3). Rerunning the same command resumes where it stopped, repeating no LLM call.
"""

from __future__ import annotations

import argparse

from cpo_engine.commands import add_common, config_from_args, flag


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("loop", help="the whole loop on a real LLM: generate -> fit -> search -> verify -> report",
                       description=__doc__.split("\n\n")[0].split(": ", 1)[1] + " " + __doc__.split("\n\n")[1])
    flag(p, "--out", "out", "loop folder; rerunning the same command resumes it (default runs/loop)")
    flag(p, "--queries", "task.queries", "your task: a table of query_id, query_text, gold_answer (Parquet, CSV, "
                                          "JSONL), split by query into training and fresh verification queries")
    flag(p, "--grader", "generation.grader", "grader of every answer: numeric, exact, normalized, choice, "
                                             "regex:PATTERN or module:function (default numeric)")
    flag(p, "--gold-column", "task.gold_column", "column of --queries holding the gold answer (default gold_answer)")
    flag(p, "--task", "task.kind", "built-in task, used without --queries (addition)")
    flag(p, "--train-queries", "task.n_train", "training queries (every seed prompt runs on each)", type=int)
    flag(p, "--verify-queries", "task.n_verify", "fresh held-out queries per round", type=int)
    flag(p, "--prompts", "prompts", "seed prompts table (prompt_id, prompt_text); default: the task's")
    flag(p, "--rounds", "rounds", "fit -> search -> verify rounds (each learns from earlier verified triplets)",
         type=int)
    flag(p, "--endpoint", "endpoint", "OpenAI-compatible LLM endpoint; default: start the packaged SmolLM2 "
                                      "on a local llama.cpp server")
    flag(p, "--llm-model", "generation.backend.model", "model name sent to the endpoint")
    flag(p, "--api-key-env", "generation.backend.openai.api_key_env",
         "environment variable holding the endpoint's API key (a hosted API; the key is never logged)")
    flag(p, "--max-calls", "max_calls", "stop after this many LLM calls in all (exit 3); rerun with a larger "
                                        "number to continue", type=int)
    flag(p, "--threads", "server.threads", "CPU threads of the local llama.cpp server", type=int)
    flag(p, "--max-tokens", "verify.max_tokens", "most tokens per LLM answer (every call of the loop)", type=int)
    flag(p, "--samples", "verify.samples", "LLM samples per (query, prompt)", type=int)
    flag(p, "--top-k", "verify.top_k", "searched prompts verified per round", type=int)
    flag(p, "--seed", "seed", "seed of the task draw, fit, search and samplers", type=int)
    add_common(p)
    p.set_defaults(func=run)
    return p


#: Exit code of a loop stopped by --max-calls (2: a refusal, before any LLM call).
EXIT_BUDGET = 3


def run(args: argparse.Namespace) -> int:
    import sys

    from cpo_engine.exceptions import BudgetExhausted
    from cpo_engine.workflows.config import LoopConfig
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
