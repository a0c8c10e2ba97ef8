"""Experimental designs: which (query, prompt, sample) cells to run, and what they will cost.

* ``full_grid``: every prompt on every query (no confounding: the gold standard for CPO).
* ``random_k``: ``k`` prompts drawn per query. The draw depends only on (seed, query_id), so adding
  queries later (nightly) never changes earlier queries' prompts, and a resumed run plans the same.

A budget (``max_calls`` and/or ``max_tokens``) caps the plan. The projected cost is an upper bound:
input tokens (counted with the engine's tokenizer when given, else estimated as characters / 4)
plus ``max_tokens`` per call. When the plan exceeds the budget it is cut in a balanced order
(every query's first sample of its first prompt before anyone's second), never by dropping the tail
of the query list.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from cpo_engine.exceptions import ConfigError


@dataclass(frozen=True)
class DesignConfig:
    """Which cells to run.

    Attributes
    ----------
    kind : str
        ``"full_grid"`` or ``"random_k"``.
    k : int
        Prompts per query for ``random_k`` (at most the number of prompts).
    samples_per_cell : int
        Independent samples per (query, prompt) cell (each with its own seed).
    seed : int
        Seed of the ``random_k`` draw and of the budget order.
    max_calls : int or None
        Cap on LLM calls (cells x samples).
    max_tokens : int or None
        Cap on projected tokens (input + ``sampling.max_tokens`` per call).
    price_per_1k_tokens : float or None
        When set, the projection also prints a cost in currency units.
    on_over_budget : str
        ``"truncate"`` (run the balanced prefix that fits) or ``"error"``.
    """

    kind: str = field(default="full_grid", metadata={"choices": ("full_grid", "random_k")})
    k: int = 1
    samples_per_cell: int = 1
    seed: int = 0
    max_calls: int | None = None
    max_tokens: int | None = None
    price_per_1k_tokens: float | None = None
    on_over_budget: str = "truncate"

    def __post_init__(self) -> None:
        if self.kind not in ("full_grid", "random_k"):
            raise ConfigError(f"design.kind must be 'full_grid' or 'random_k', got '{self.kind}'")
        if self.k < 1 or self.samples_per_cell < 1:
            raise ConfigError(
                f"design.k and design.samples_per_cell must be >= 1, got {self.k}, {self.samples_per_cell}"
            )
        for name in ("max_calls", "max_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"design.{name} must be >= 1 or unset, got {value}")
        if self.on_over_budget not in ("truncate", "error"):
            raise ConfigError(f"design.on_over_budget must be 'truncate' or 'error', got '{self.on_over_budget}'")


@dataclass(frozen=True)
class Plan:
    """Planned cells as parallel arrays (query index, prompt index, sample), in budget order."""

    query_idx: np.ndarray
    prompt_idx: np.ndarray
    sample: np.ndarray

    def __len__(self) -> int:
        return int(self.query_idx.size)

    def take(self, n: int) -> "Plan":
        return Plan(self.query_idx[:n], self.prompt_idx[:n], self.sample[:n])


@dataclass(frozen=True)
class CostProjection:
    """Upper bound of what a plan costs."""

    calls: int
    input_tokens: int
    max_output_tokens: int
    dollars: float | None

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.max_output_tokens

    def describe(self) -> str:
        money = f", ~{self.dollars:.2f} at the given price" if self.dollars is not None else ""
        return (f"{self.calls} LLM calls, <= {self.total_tokens:,} tokens ({self.input_tokens:,} input + "
                f"<= {self.max_output_tokens:,} output){money}")


def _query_rng(seed: int, query_id: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}\x1f{query_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def plan_cells(query_ids: Sequence[str], n_prompts: int, cfg: DesignConfig) -> Plan:
    """All cells of the design, in balanced budget order (round r holds every query's r-th draw)."""
    if n_prompts < 1 or not len(query_ids):
        raise ConfigError(f"a design needs at least one query and one prompt, got {len(query_ids)} and {n_prompts}")
    if cfg.kind == "random_k" and cfg.k > n_prompts:
        raise ConfigError(f"design.k={cfg.k} exceeds the {n_prompts} prompts available; lower k or add prompts")
    per_query = n_prompts if cfg.kind == "full_grid" else cfg.k
    # A per-query shuffle: random_k keeps its first k; full_grid keeps all but in a random rank order
    # so a budget cut spreads over prompts too.
    ranks = np.stack([_query_rng(cfg.seed, str(q)).permutation(n_prompts)[:per_query] for q in query_ids])
    q_perm = np.random.default_rng(cfg.seed).permutation(len(query_ids))
    s, r, q = np.meshgrid(np.arange(cfg.samples_per_cell), np.arange(per_query), q_perm, indexing="ij")
    q, r, s = q.ravel(), r.ravel(), s.ravel()
    return Plan(query_idx=q.astype(np.int64), prompt_idx=ranks[q, r].astype(np.int64), sample=s.astype(np.int64))


def project_cost(input_tokens: np.ndarray, max_tokens: int, price_per_1k: float | None = None) -> CostProjection:
    """Cost of running calls whose inputs have the given token counts."""
    n_in = int(np.sum(input_tokens))
    n_out = int(max_tokens) * int(input_tokens.size)
    dollars = (n_in + n_out) / 1000.0 * price_per_1k if price_per_1k is not None else None
    return CostProjection(calls=int(input_tokens.size), input_tokens=n_in, max_output_tokens=n_out, dollars=dollars)


def budget_cut(input_tokens: np.ndarray, max_tokens: int, cfg: DesignConfig) -> int:
    """How many cells (a prefix of the plan) fit the budget; raises when it must but cannot."""
    n = int(input_tokens.size)
    if cfg.max_calls is not None:
        n = min(n, cfg.max_calls)
    if cfg.max_tokens is not None:
        cum = np.cumsum(input_tokens[:n] + max_tokens)
        n = int(np.searchsorted(cum, cfg.max_tokens, side="right"))
    if n < input_tokens.size and cfg.on_over_budget == "error":
        raise ConfigError(
            f"the design needs {input_tokens.size} calls but the budget allows {n}; raise design.max_calls/"
            "max_tokens, shrink the design, or set design.on_over_budget='truncate'"
        )
    return n


def estimate_tokens(texts: Sequence[str]) -> np.ndarray:
    """Characters / 4, rounded up: a tokenizer-free upper-ish estimate for English text."""
    return np.array([(len(t) + 3) // 4 for t in texts], dtype=np.int64)


__all__ = ["DesignConfig", "Plan", "CostProjection", "plan_cells", "project_cost", "budget_cut", "estimate_tokens"]
