"""Evaluation harness: real outcome grids, injected confounding, known truth.

A full grid (every prompt on every query, possibly several samples per cell) gives each cell's mean
as the true success rate. Queries are split into train and test (seeded, by query text so a question
shared by two tasks never straddles the split). From the train queries, observational logs are drawn
with a known logging policy; every method fits on those logs and is scored on the test queries
against the truth: per-query Kendall tau-b of the prompt ranking, policy value of each query's argmax
prompt, regret against the per-query oracle, and the same on the hardest queries. Means with 95%
confidence intervals over seeds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np

from cpo_engine.data.grid import cell_means
from cpo_engine.exceptions import ConfigError, DataError

CONFOUNDING = ("none", "observable", "latent")
METRICS = ("policy_value", "regret", "tau_b", "policy_value_hard", "regret_hard", "tau_b_hard")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


@dataclass
class EvaluationConfig:
    """Settings of one evaluation run (the causal model's own settings are a
    :class:`~cpo_engine.causal.config.CausalConfig`, passed beside this)."""

    confounding: str = field(default="observable", metadata={"choices": CONFOUNDING})
    """Logging policy: 'none' (uniform), 'observable' (query length/number count x prompt length),
    'latent' (true query difficulty x prompt length)."""
    strength: float = 2.0
    """Logit scale of the confounding: P(prompt | query) ~ exp(strength * z_query * z_prompt).
    Positive: long/hard queries get long (elaborate) prompts; negative: they get short ones."""
    logged_per_query: int = 4
    """Logged (prompt, outcome) draws per train query, with replacement from the policy."""
    seeds: int = 5
    """Repetitions (split, logs, fits); CIs are over these."""
    first_seed: int = 0
    """Seed of the first repetition."""
    test_fraction: float = 0.3
    """Share of query texts held out for scoring."""
    hard_fraction: float = 1 / 3
    """Share of test queries with the lowest mean true success that form the 'hard' tier."""
    query_text_features: bool = False
    """Append simple text statistics of the query (log length, number count) to X."""
    with_forest: bool = False
    """Also fit econml CausalForestDML (slow; CPU)."""
    exploration: float = 0.2
    """Share of the logging policy that is uniform over the prompts: every prompt keeps a propensity
    of at least exploration / n_prompts. Off-policy evaluation needs that overlap (positivity), so the
    default logs explore like an epsilon-greedy router; 0 gives a near-deterministic router, where the
    OPE check reports bounds instead of intervals (see docs/causal.md)."""
    ope: bool = True
    """Check off-policy evaluation: draw held-out logs on test queries and compare each method's
    estimated policy value (DM, IPW, SNIPS, DR, SNDR) with its true value."""
    ope_logged_per_query: int | None = None
    """Logged prompts per held-out query draw for the OPE check (None: logged_per_query)."""
    ope_draws: int = 10
    """Independent held-out log draws per repetition for the OPE check (cheap: the models are fitted
    once per repetition), so coverage is measured on seeds x draws intervals."""
    train_queries: int | None = None
    """Fit on at most this many (randomly chosen) training queries (None: the whole train split);
    the data-budget sweep varies it."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError on out-of-range settings."""
        if self.confounding not in CONFOUNDING:
            raise ConfigError(f"confounding must be one of {CONFOUNDING}, got {self.confounding!r}")
        if self.logged_per_query < 1 or self.seeds < 1:
            raise ConfigError("logged_per_query and seeds must be >= 1")
        if not 0 <= self.exploration <= 1:
            raise ConfigError(f"exploration must be in [0, 1], got {self.exploration}")
        if self.ope_draws < 1 or (self.ope_logged_per_query is not None and self.ope_logged_per_query < 1) or \
                (self.train_queries is not None and self.train_queries < 2):
            raise ConfigError("ope_draws and ope_logged_per_query must be >= 1, train_queries >= 2 (or unset)")
        if not 0 < self.test_fraction < 1 or not 0 < self.hard_fraction <= 1:
            raise ConfigError("test_fraction must be in (0, 1) and hard_fraction in (0, 1]")
        if not np.isfinite(self.strength):
            raise ConfigError(f"strength must be a finite number, got {self.strength}")


@dataclass
class Grid:
    """A full outcome grid: truth per (query, prompt) cell and the samples behind it."""

    truth: np.ndarray  # (n_q, n_p) cell means
    scores: np.ndarray  # every sample's score, sorted by cell
    cell_start: np.ndarray  # (n_q * n_p,) first sample of each cell in `scores`
    cell_count: np.ndarray  # (n_q * n_p,) samples per cell
    query_texts: list[str]
    prompt_texts: list[str]


def build_grid(table: Any, reps: Any) -> Grid:
    """Cell means and sample index of a full-grid triplet table; DataError when cells are missing."""
    n_q, n_p = len(reps.query_ids), len(reps.prompt_ids)
    cell = reps.row_query * n_p + reps.row_prompt
    scores = np.asarray(table.column("score").to_numpy(zero_copy_only=False), dtype=np.float64)
    count = np.bincount(cell, minlength=n_q * n_p)
    missing = np.flatnonzero(count == 0)
    if len(missing):
        q, p = divmod(int(missing[0]), n_p)
        raise DataError(
            f"the table is not a full grid: {len(missing)} (query, prompt) cells have no rows, e.g. "
            f"query {reps.query_ids[q]!r} x prompt {reps.prompt_ids[p]!r}",
            fix="evaluate needs every prompt run on every query; fit logged data with `cpo fit`")
    order = np.argsort(cell, kind="stable")
    truth, _ = cell_means(reps.row_query, reps.row_prompt, scores, n_q, n_p)
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    return Grid(truth, scores[order], start, count, list(reps.query_texts), list(reps.prompt_texts))


def _z(v: np.ndarray) -> np.ndarray:
    sd = v.std()
    return (v - v.mean()) / sd if sd > 0 else np.zeros_like(v)


def text_features(texts: list[str]) -> np.ndarray:
    """Per-text [log1p(characters), number count]: observable facts about a query."""
    return np.array([[np.log1p(len(t)), len(_NUMBER.findall(t))] for t in texts], dtype=np.float64)


def query_confounder(grid: Grid, kind: str) -> np.ndarray:
    """Standardized query score that drives the logging policy."""
    if kind == "observable":
        f = text_features(grid.query_texts)
        return _z(_z(f[:, 0]) + _z(f[:, 1]))
    if kind == "latent":
        return _z(1.0 - grid.truth.mean(1))
    return np.zeros(len(grid.truth))


def logging_policy(grid: Grid, cfg: EvaluationConfig) -> np.ndarray:
    """P(prompt | query) for every query (n_q, n_p): elaborate prompts for long/hard queries."""
    zq = query_confounder(grid, cfg.confounding)
    zp = _z(np.log([max(len(t), 1) for t in grid.prompt_texts]))
    logits = cfg.strength * zq[:, None] * zp[None, :]
    logits -= logits.max(1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(1, keepdims=True)
    return (1 - cfg.exploration) * p + cfg.exploration / p.shape[1]


def draw_logs(grid: Grid, policy: np.ndarray, train: np.ndarray, k: int,
              rng: np.random.Generator) -> dict[str, np.ndarray]:
    """k logged (prompt, sampled outcome, propensity) rows per train query; ``pick`` is the position of
    each outcome in ``grid.scores`` (the grid's samples sorted by cell)."""
    q = np.repeat(train, k)
    cum = policy[q].cumsum(1)
    p = (cum < rng.random(len(q))[:, None] * cum[:, -1:]).sum(1)
    p = np.minimum(p, policy.shape[1] - 1)
    cell = q * policy.shape[1] + p
    pick = grid.cell_start[cell] + (rng.random(len(q)) * grid.cell_count[cell]).astype(np.int64)
    return {"q": q, "p": p, "y": grid.scores[pick], "pi": policy[q, p], "pick": pick}


def tau_b_rows(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Kendall tau-b between each row of ``pred`` and ``truth`` (NaN where either row is constant)."""
    i, j = np.triu_indices(pred.shape[1], k=1)
    a, b = np.sign(pred[:, i] - pred[:, j]), np.sign(truth[:, i] - truth[:, j])
    denom = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (a * b).sum(1) / np.where(denom > 0, denom, 1), np.nan)


def policy_metrics(pred: np.ndarray, truth: np.ndarray, hard: np.ndarray) -> dict[str, float]:
    """Policy value, regret and mean tau-b of a score matrix on test queries, overall and hard tier."""
    value = truth[np.arange(len(truth)), pred.argmax(1)]
    best = truth.max(1)
    tau = tau_b_rows(pred, truth)
    out = {"policy_value": value.mean(), "regret": (best - value).mean(), "tau_b": np.nanmean(tau),
           "policy_value_hard": value[hard].mean(), "regret_hard": (best - value)[hard].mean(),
           "tau_b_hard": np.nanmean(tau[hard])}
    return {k: float(v) for k, v in out.items()}


def static_naive(logs: dict, n_p: int) -> np.ndarray:
    """Mean logged score per prompt (unlogged prompts rank last)."""
    s = np.bincount(logs["p"], weights=logs["y"], minlength=n_p)
    c = np.bincount(logs["p"], minlength=n_p)
    return np.where(c > 0, s / np.maximum(c, 1), -np.inf)


def static_ipw(logs: dict, n_p: int) -> np.ndarray:
    """Self-normalized inverse-propensity estimate of each prompt's mean score."""
    w = 1.0 / logs["pi"]
    s = np.bincount(logs["p"], weights=w * logs["y"], minlength=n_p)
    c = np.bincount(logs["p"], weights=w, minlength=n_p)
    return np.where(c > 0, s / np.where(c > 0, c, 1), -np.inf)


def observational_logs(table: Any, cfg: EvaluationConfig, per_query: int = 1, seed: int = 0,
                       with_propensity: bool = True) -> Any:
    """Observational triplet logs drawn from a full grid: ``per_query`` rows per query, the prompt drawn
    from :func:`logging_policy` (``cfg``'s confounding, strength and exploration) and the score from
    one of the cell's samples; the ``propensity`` column (the logging probability of the row's prompt)
    is kept or dropped. The test data for off-policy evaluation on logs whose truth is known.
    """
    import pyarrow as pa

    from cpo_engine.embedding.representations import unique_texts

    qids, qtexts, row_q = unique_texts(table, "query_id", "query_text")
    pids, ptexts, row_p = unique_texts(table, "prompt_id", "prompt_text")
    index = SimpleNamespace(query_ids=qids, prompt_ids=pids, query_texts=qtexts, prompt_texts=ptexts,
                            row_query=row_q, row_prompt=row_p)
    grid = build_grid(table, index)
    policy = logging_policy(grid, cfg)
    logs = draw_logs(grid, policy, np.arange(len(qids)), per_query, np.random.default_rng(seed))
    cell = row_q * len(pids) + row_p
    order = np.argsort(cell, kind="stable")  # draw_logs picks sample `pick` of the cell-sorted scores
    rows = order[logs["pick"]]
    out = table.take(pa.array(rows))
    # `sample` numbers the logged repeats of a cell (a cell drawn twice may repeat a recorded sample)
    repeat = _occurrence(logs["q"] * len(pids) + logs["p"])
    out = out.drop_columns([c for c in ("propensity", "sample") if c in out.column_names])
    out = out.append_column("sample", pa.array(repeat, pa.int64()))
    if with_propensity:
        out = out.append_column("propensity", pa.array(logs["pi"], pa.float64()))
    return out


def _occurrence(keys: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... for the successive rows with the same key."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    start = np.r_[0, np.flatnonzero(np.diff(sorted_keys)) + 1]
    run = np.arange(len(keys)) - np.repeat(start, np.diff(np.r_[start, len(keys)]))
    out = np.empty(len(keys), dtype=np.int64)
    out[order] = run
    return out
