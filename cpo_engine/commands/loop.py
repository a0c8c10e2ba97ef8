"""`cpo loop`: the whole loop on a real LLM: seed prompts -> triplets -> fit -> search -> verify -> report.

With no endpoint it starts the packaged SmolLM2-135M-Instruct on a local llama.cpp server (extra
`local-llm`), so it runs on a CPU in minutes. Rerunning the same command resumes where it stopped.
"""

from __future__ import annotations

import argparse

from cpo_engine.commands import add_common, config_from_args, flag


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("loop", help="the whole loop on a real LLM: generate -> fit -> search -> verify -> report",
                       description=__doc__.split("\n\n")[0].split(": ", 1)[1] + " " + __doc__.split("\n\n")[1])
    flag(p, "--out", "out", "loop folder; rerunning the same command resumes it (default runs/loop)")
    flag(p, "--task", "task.kind", "programmatic task (addition)")
    flag(p, "--train-queries", "task.n_train", "training queries (every seed prompt runs on each)", type=int)
    flag(p, "--verify-queries", "task.n_verify", "fresh held-out queries per round", type=int)
    flag(p, "--prompts", "prompts", "seed prompts table (prompt_id, prompt_text); default: the task's")
    flag(p, "--rounds", "rounds", "fit -> search -> verify rounds (each learns from earlier verified triplets)",
         type=int)
    flag(p, "--endpoint", "endpoint", "OpenAI-compatible LLM endpoint; default: start the packaged SmolLM2 "
                                      "on a local llama.cpp server")
    flag(p, "--llm-model", "generation.backend.model", "model name sent to the endpoint")
    flag(p, "--threads", "server.threads", "CPU threads of the local llama.cpp server", type=int)
    flag(p, "--max-tokens", "verify.max_tokens", "most tokens per LLM answer (every call of the loop)", type=int)
    flag(p, "--samples", "verify.samples", "LLM samples per (query, prompt)", type=int)
    flag(p, "--top-k", "verify.top_k", "searched prompts verified per round", type=int)
    flag(p, "--seed", "seed", "seed of the task draw, fit, search and samplers", type=int)
    add_common(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from cpo_engine.workflows.config import LoopConfig
    from cpo_engine.workflows.loop import run_loop

    result = run_loop(config_from_args(args, LoopConfig))
    print(f"loop folder: {result.out} (loop_report.md, loop_report.json)")
    return 0


__all__ = ["register", "run"]
