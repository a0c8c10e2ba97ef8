"""``none``: no generative search; the search chooses among the logged prompts only."""

from __future__ import annotations

from typing import Any

from cpo_engine.search.proposers import register_proposer


@register_proposer("none", help="no generative search, the logged prompts only", generative=False)
def make_no_proposer(cfg: Any, *, task: str | None = None, seed: int = 0) -> None:
    """The registered ``none``: no proposer."""
    return None


__all__ = ["make_no_proposer"]
