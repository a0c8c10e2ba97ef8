"""Assign prompts to unscored queries at scale (`cpo assign` flags); `--executor ray` runs Ray Data
``map_batches`` over an actor pool on the cluster, one encoder per actor (on a GPU when present).

    ray job submit --address http://HEAD:8265 --working-dir . --runtime-env jobs/runtime_env.yaml -- \\
        python -m jobs.assign --model s3://bucket/runs/mine --queries s3://bucket/new/ \\
            --out s3://bucket/assignments/ --executor ray --num-actors 4
"""

from __future__ import annotations

import sys

from jobs._entry import run_command


def main(argv: list[str] | None = None) -> int:
    return run_command("assign", argv)


if __name__ == "__main__":
    sys.exit(main())
