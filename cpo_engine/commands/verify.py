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

from cpo_engine.commands import add_common, add_tracking_flags, config_from_args, flag, use_config
from cpo_engine.settings import VerifyJobConfig


def add_verify_flags(p: argparse.ArgumentParser, prefix: str = "--verify-") -> None:
    """Flags of the LLM (``generation`` section) and the verify budget (``verify`` section). Any
    ``generation`` key set turns the verify stage on in `cpo run`, `cpo optimize` and `cpo nightly`."""
    flag(p, "generation.backend.kind", name=f"{prefix}backend")
    flag(p, "generation.backend.openai.base_url", name=f"{prefix}base-url")
    flag(p, "generation.backend.model", name=f"{prefix}llm-model")
    flag(p, "generation.template.position", name=f"{prefix}position")
    flag(p, "generation.grader", name=f"{prefix}grader")
    flag(p, "verify.queries", name=f"{prefix}queries")
    flag(p, "verify.gold_column", name=f"{prefix}gold-column")
    flag(p, "verify.max_queries", name=f"{prefix}max-queries")
    flag(p, "verify.samples", name=f"{prefix}samples")
    flag(p, "verify.max_tokens", name=f"{prefix}max-tokens")
    flag(p, "verify.top_k", name=f"{prefix}top-k")


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("verify", help="measure a run's recommended prompts with the LLM on held-out queries",
                       description=__doc__.split("\n\n")[1].replace("\n", " "))
    use_config(p, VerifyJobConfig)
    p.add_argument("run_pos", nargs="?", metavar="RUN", help="a `cpo run` or `cpo optimize` output folder")
    flag(p, "run")
    flag(p, "data.path", name="--data")
    flag(p, "model")
    add_verify_flags(p, prefix="--")
    flag(p, "selection.z")
    flag(p, "verify.seed")
    add_tracking_flags(p)
    add_common(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from cpo_engine.workflows.verify import print_verification, verify_job

    if getattr(args, "run_pos", None) and args.run is None:
        args.run = args.run_pos
    result = verify_job(config_from_args(args, VerifyJobConfig))
    print_verification(result.report)
    print(f"wrote {result.out}/verification.json, verification.md, verified_triplets.parquet")
    return 0


__all__ = ["register", "run", "add_verify_flags"]
