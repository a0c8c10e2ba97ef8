"""Nightly re-optimization (`cpo nightly` flags): append new triplets, refit, search, compare, flag drift.
"""

from __future__ import annotations

import sys

from jobs._entry import run_command


def main(argv: list[str] | None = None) -> int:
    return run_command("nightly", argv)


if __name__ == "__main__":
    sys.exit(main())
