"""`cpo verify`: run a run's recommended prompts with the LLM on held-out queries and measure them.

Takes a `cpo run` or `cpo optimize` output folder: the incumbent, the best static prompt, the search's
top-K prompts and the per-query policy run on a sample of held-out queries through the configured
backend (an OpenAI-compatible server such as llama.cpp or vLLM serve, vLLM in process or on Ray),
graded like the training data. It reports each prompt's measured value and paired 95% interval
against the incumbent, and the reward model's calibration (predicted vs measured uplift); the
folder's assignment.parquet, candidates.parquet and report.html then mark each recommended prompt
`verified` or `predicted only`. Reruns resume the LLM calls already made.
"""

from __future__ import annotations

import argparse

from cpo_engine.commands import add_common, config_from_args, flag


def add_verify_flags(p: argparse.ArgumentParser, prefix: str = "--verify-") -> None:
    """Flags of the LLM (``generation`` section) and the verify budget (``verify`` section). Any
    ``generation`` key set turns the verify stage on in `cpo run`, `cpo optimize` and `cpo nightly`."""
    flag(p, f"{prefix}backend", "generation.backend.kind", "LLM backend that runs the prompts: openai, vllm, replay")
    flag(p, f"{prefix}base-url", "generation.backend.openai.base_url",
         "OpenAI-compatible server that runs the prompts (llama.cpp, vLLM serve, hosted)")
    flag(p, f"{prefix}llm-model", "generation.backend.model", "model name sent to the server, or the vLLM model path")
    flag(p, f"{prefix}position", "generation.template.position", "where the prompt goes relative to the query",
         choices=["prefix", "suffix", "system"])
    flag(p, f"{prefix}grader", "generation.grader", "grader of the answers: numeric, exact, normalized, choice, "
                                                    "regex:PATTERN or module:function (as `cpo generate`)")
    flag(p, f"{prefix}queries", "verify.queries", "held-out queries: a table of query_id, query_text, gold_answer "
                                                   "(Parquet, CSV, JSONL; default: the run's held-out split)")
    flag(p, f"{prefix}gold-column", "verify.gold_column", "column of the queries holding the gold answer "
                                                          "(default gold_answer)")
    flag(p, f"{prefix}max-queries", "verify.max_queries", "queries sampled for verification (budget)", type=int)
    flag(p, f"{prefix}samples", "verify.samples", "LLM samples per (query, prompt) (budget)", type=int)
    flag(p, f"{prefix}max-tokens", "verify.max_tokens", "most tokens per LLM answer (budget)", type=int)
    flag(p, f"{prefix}top-k", "verify.top_k", "searched prompts verified besides the incumbent and best static", type=int)


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("verify", help="measure a run's recommended prompts with the LLM on held-out queries",
                       description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("run_pos", nargs="?", metavar="RUN", help="a `cpo run` or `cpo optimize` output folder")
    flag(p, "--run", "run", "the folder to verify (same as RUN)")
    flag(p, "--data", "data.path", "the table the folder was made from (default: the one it records)")
    flag(p, "--model", "model", "model bundle (`cpo optimize` folders; default: the one it recorded)")
    add_verify_flags(p, prefix="--")
    flag(p, "--z", "selection.z", "lower-confidence-bound multiplier of the per-query policy", type=float)
    flag(p, "--seed", "verify.seed", "seed of the query sample", type=int)
    add_common(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from cpo_engine.workflows.config import VerifyJobConfig
    from cpo_engine.workflows.verify import print_verification, verify_job

    if getattr(args, "run_pos", None) and args.run is None:
        args.run = args.run_pos
    result = verify_job(config_from_args(args, VerifyJobConfig))
    print_verification(result.report)
    print(f"wrote {result.out}/verification.json, verification.md, verified_triplets.parquet")
    return 0


__all__ = ["register", "run", "add_verify_flags"]
