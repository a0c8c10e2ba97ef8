"""Generate triplets (`cpo generate` flags): queries x prompts -> LLM -> grader -> resumable shards.

With `--executor ray` templating and grading run as Ray Data CPU tasks and the engine as an actor
pool on the cluster (`--set ray.gpus_per_engine=1` puts one vLLM engine on each GPU).
"""

from __future__ import annotations

import sys

from jobs._entry import run_command


def main(argv: list[str] | None = None) -> int:
    return run_command("generate", argv)


if __name__ == "__main__":
    sys.exit(main())
