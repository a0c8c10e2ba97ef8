"""The whole loop on a real LLM (`cpo loop` flags): generate -> fit -> search -> verify -> report.

On a cluster pass ``--endpoint`` (an OpenAI-compatible server the job can reach, e.g. vLLM serve) or
``--set generation.backend.kind=vllm --set generation.executor=ray`` (vLLM engines in Ray actors);
without either, the job starts the packaged SmolLM2 on a llama.cpp server on its own node.
"""

from __future__ import annotations

import sys

from jobs._entry import run_command


def main(argv: list[str] | None = None) -> int:
    return run_command("loop", argv)


if __name__ == "__main__":
    sys.exit(main())
