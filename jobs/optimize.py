"""Prompt search with a saved causal model (`cpo optimize` flags).
"""

from __future__ import annotations

import sys

from jobs._entry import run_command


def main(argv: list[str] | None = None) -> int:
    return run_command("optimize", argv)


if __name__ == "__main__":
    sys.exit(main())
