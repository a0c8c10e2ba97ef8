"""Nightly re-optimization (`cpo nightly` flags): append new triplets, refit, search, compare, flag drift, and
promote on measured evidence (an LLM's verification, or held-out fresh logs). Scheduled with cron + `ray job
submit` or a KubeRay RayJob: docs/ray_jobs.md, "Nightly on a schedule"; examples/kuberay/.
"""

from __future__ import annotations

import sys

from jobs._entry import run_command


def main(argv: list[str] | None = None) -> int:
    return run_command("nightly", argv)


if __name__ == "__main__":
    sys.exit(main())
