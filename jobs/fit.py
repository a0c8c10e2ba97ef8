"""Fit the causal reward model (`cpo fit` flags); `--backend ray` runs the cross-fitting folds as Ray tasks.
"""

from __future__ import annotations

import sys

from jobs._entry import run_command


def main(argv: list[str] | None = None) -> int:
    return run_command("fit", argv)


if __name__ == "__main__":
    sys.exit(main())
