"""Triplet builder: queries x prompts -> LLM -> grader -> sharded, resumable triplet store.

``generate_triplets(cfg)`` is the one library function behind ``cpo generate`` and
``jobs/generate.py``: it plans the design, prints the projected cost, skips every row already
committed in the output folder, orders the rest so shared prefixes are adjacent, and runs them
either in-process (``executor="local"``) or as a Ray Data pipeline (``executor="ray"``: CPU
templating and grading stages around an actor-pool engine stage). Each finished batch is committed
as one shard, so a kill at any moment loses at most the batches in flight.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa

from cpo_engine.exceptions import BackendError, BudgetExhausted, ConfigError, DataError
from cpo_engine.generation.config import GenerateConfig, RayConfig
from cpo_engine.generation.design import (
    CostProjection, Plan, budget_cut, estimate_tokens, plan_cells, project_cost,
)
from cpo_engine.generation.stages import PLAN_COLUMNS, EngineStage, grade, render
from cpo_engine.generation.store import ShardStore
from cpo_engine.generation.templating import prefix_order
from cpo_engine.utils import LEDGER, rate_eta

log = logging.getLogger(__name__)


@dataclass
class GenerationSummary:
    """What a generate call did."""

    out: str
    planned: int
    already_done: int
    generated: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    wall_s: float
    projected: str

    @property
    def rows_per_s(self) -> float:
        return self.generated / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        return (self.prompt_tokens + self.completion_tokens) / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"rows_per_s": self.rows_per_s, "tokens_per_s": self.tokens_per_s}


# ----------------------------------------------------------------------------------------------
# inputs


def load_inputs(cfg: GenerateConfig) -> tuple[pa.Table, pa.Table]:
    """(queries, prompts): deduplicated by id, checked for the columns the builder needs."""
    from cpo_engine.data import example_path, read_table

    q_path = cfg.queries or str(example_path())
    queries = _dedupe(read_table(q_path), "query_id", q_path)
    _need(queries, ("query_id", "query_text", cfg.gold_column), q_path, "queries")
    if cfg.max_queries is not None:
        queries = queries.slice(0, cfg.max_queries)
    p_path = cfg.prompts or q_path
    prompts = _dedupe(read_table(p_path), "prompt_id", p_path)
    _need(prompts, ("prompt_id", "prompt_text"), p_path, "prompts")
    return queries, prompts


def _need(table: pa.Table, cols: tuple[str, ...], source: str, what: str) -> None:
    missing = [c for c in cols if c not in table.column_names]
    if missing:
        raise DataError(f"the {what} table lacks column(s) {missing}", source=source, column=missing[0],
                        fix=f"a {what} table needs {list(cols)}; found {table.column_names}")


def _dedupe(table: pa.Table, id_col: str, source: str) -> pa.Table:
    if id_col not in table.column_names:
        raise DataError(f"no '{id_col}' column", source=source, column=id_col,
                        fix=f"add an {id_col} column (found {table.column_names})")
    ids = table.column(id_col).cast(pa.string()).to_pylist()
    first: dict[str, int] = {}
    for i, v in enumerate(ids):
        if v is None:
            raise DataError(f"empty {id_col}", source=source, column=id_col, rows=[i], fix="give every row an id")
        first.setdefault(v, i)
    return table.take(pa.array(list(first.values()), pa.int64()))


# ----------------------------------------------------------------------------------------------
# planning


def plan_rows(cfg: GenerateConfig, queries: pa.Table, prompts: pa.Table) -> pa.Table:
    """The planned rows (PLAN_COLUMNS), in budget order, before budget and resume."""
    qid = queries.column("query_id").cast(pa.string()).to_pylist()
    plan = plan_cells(qid, prompts.num_rows, cfg.design)
    return _plan_table(cfg, queries, prompts, plan)


def _plan_table(cfg: GenerateConfig, queries: pa.Table, prompts: pa.Table, plan: Plan) -> pa.Table:
    def col(t: pa.Table, name: str, idx: np.ndarray) -> list[Any]:
        values = t.column(name).to_pylist() if name in t.column_names else [None] * t.num_rows
        return [None if values[i] is None else str(values[i]) for i in idx]

    q, p = plan.query_idx, plan.prompt_idx
    golds = queries.column(cfg.gold_column).to_pylist()
    return pa.table({
        "run_id": [cfg.run_id] * len(plan), "query_id": col(queries, "query_id", q),
        "query_text": col(queries, "query_text", q), "prompt_id": col(prompts, "prompt_id", p),
        "prompt_text": col(prompts, "prompt_text", p), "sample": plan.sample.tolist(),
        "gold_answer": [_gold_str(golds[i]) for i in q],
        "task": col(queries, "task", q),
    }).select(list(PLAN_COLUMNS))


def _gold_str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 1e15 else repr(value)
    return str(value)


def input_texts(rows: pa.Table, cfg: GenerateConfig) -> list[str]:
    """The rendered LLM input of each planned row as one string (for cost and prefix ordering)."""
    from cpo_engine.generation.stages import requests_from

    rendered = render(rows, cfg.template, cfg.sampling)
    return [r.prefix_text() for r in requests_from(rendered.to_pydict(), cfg.sampling)]


def identity(cfg: GenerateConfig, queries: pa.Table, prompts: pa.Table) -> dict[str, Any]:
    """What decides a run's rows: a resumed run must match it exactly."""
    from cpo_engine.utils import sha256_text

    def digest(t: pa.Table, cols: tuple[str, ...]) -> str:
        return sha256_text(json.dumps([t.column(c).cast(pa.string()).to_pylist() for c in cols if c in t.column_names]))

    out = {
        "run_id": cfg.run_id, "queries_sha256": digest(queries, ("query_id", "query_text", cfg.gold_column)),
        "prompts_sha256": digest(prompts, ("prompt_id", "prompt_text")), "max_queries": cfg.max_queries,
        "design": asdict(cfg.design), "template": asdict(cfg.template), "sampling": asdict(cfg.sampling),
        "model": cfg.backend.model, "backend": cfg.backend.kind, "grader": cfg.grader,
    }
    if cfg.backend.kind == "replay":  # the log decides every answer: another log is another run
        out["replay"] = replay_identity(cfg.backend.replay)
    return out


def replay_identity(replay: Any) -> dict[str, Any]:
    """The replayed log's path, answer column and content hash."""
    from pathlib import Path

    from cpo_engine.utils import sha256_file, sha256_tree

    path = Path(replay.path)
    if not path.exists():
        raise DataError("the replay log does not exist", source=str(path), fix="check --replay PATH")
    digest = sha256_file(path) if path.is_file() else sha256_tree(path)
    return {"path": str(path), "text_column": replay.text_column, "sha256": digest}


# ----------------------------------------------------------------------------------------------
# a cap on the LLM calls of several runs together


@dataclass
class CallBudget:
    """At most ``max_calls`` LLM calls over every :func:`generate_triplets` run inside
    ``with call_budget(...)`` (`cpo loop --max-calls`). A run's rows already committed count as calls
    (made by an earlier invocation); when a run's pending rows do not fit, it runs the first ones that
    do (in design order), commits them and raises :class:`~cpo_engine.exceptions.BudgetExhausted`, so a
    rerun with a larger cap resumes there."""

    max_calls: int
    used: int = 0
    """Calls counted so far (committed rows of the runs seen, plus :meth:`count`)."""

    def count(self, calls: int) -> None:
        """Count calls made outside :func:`generate_triplets` (e.g. a stage finished earlier)."""
        self.used += int(calls)

    def grant(self, done: int, pending: int) -> int:
        """How many of a run's ``pending`` rows may run, its ``done`` rows counted first."""
        self.used += done
        n = max(0, min(pending, self.max_calls - self.used))
        self.used += n
        return n

    def stop(self, left: int) -> BudgetExhausted:
        return BudgetExhausted(
            f"stopped at the budget of {self.max_calls} LLM calls (--max-calls): {self.used} calls are made and "
            f"committed, {left} call(s) of this step are left, and the later steps have not run\n  fix: rerun the "
            "same command with a larger --max-calls (or none) to continue: no call already made is repeated")


_BUDGET: ContextVar[CallBudget | None] = ContextVar("cpo_call_budget", default=None)


@contextmanager
def call_budget(max_calls: int | None) -> Iterator[CallBudget | None]:
    """Cap the LLM calls of the :func:`generate_triplets` runs in the block (None: no cap)."""
    if max_calls is not None and max_calls < 0:
        raise ConfigError(f"max_calls must be >= 0, got {max_calls}")
    budget = None if max_calls is None else CallBudget(int(max_calls))
    token = _BUDGET.set(budget)
    try:
        yield budget
    finally:
        _BUDGET.reset(token)


# ----------------------------------------------------------------------------------------------
# running


def generate_triplets(
    cfg: GenerateConfig, backend: Any = None, echo: Callable[[str], None] = print, dry_run: bool = False
) -> GenerationSummary:
    """Plan, project the cost, resume, generate, grade and commit shards; return a summary.

    Parameters
    ----------
    cfg : GenerateConfig
    backend : Backend, optional
        A ready backend for the local executor (default: built from ``cfg.backend``).
    echo : callable
        Where progress lines go (the projected cost is always echoed before any LLM call).
    dry_run : bool
        Stop after printing the plan and its projected cost (nothing is written).
    """
    if LEDGER.current == "other":  # not a stage of a run (`cpo generate`): its calls are the 'generate' stage
        with LEDGER.stage("generate"):
            return generate_triplets(cfg, backend, echo, dry_run)
    t0 = time.perf_counter()
    queries, prompts = load_inputs(cfg)
    rows, texts, projected = _plan(cfg, queries, prompts, echo)
    n_fit = rows.num_rows
    if dry_run:
        return GenerationSummary(out=cfg.out, planned=n_fit, already_done=0, generated=0, errors=0, prompt_tokens=0,
                                 completion_tokens=0, wall_s=time.perf_counter() - t0, projected=projected.describe())
    with ShardStore.open(cfg.out, identity(cfg, queries, prompts), overwrite=cfg.overwrite) as store:
        # Settings that do not decide the rows (endpoint, concurrency, executor): recorded, not enforced.
        # The API key's variable name is recorded; its value never is (nor credentials in a URL).
        store.manifest["settings"] = {"backend": cfg.backend.settings(), "executor": cfg.executor,
                                      "shard_size": cfg.shard_size, "prefix_order": cfg.prefix_order}
        pending = _pending(rows, store.done_keys(retry_errors=cfg.retry_errors))
        echo(f"{n_fit - len(pending)} rows already committed in {cfg.out}; {len(pending)} to generate")
        budget, over = _BUDGET.get(), 0
        if budget is not None:  # a cap on calls across runs (`cpo loop --max-calls`): run what fits
            n = budget.grant(n_fit - len(pending), len(pending))
            pending, over = pending[:n], len(pending) - n
            if over:
                echo(f"budget: {n} of them fit in --max-calls {budget.max_calls}")
        order = prefix_order([texts[i] for i in pending]) if cfg.prefix_order else np.arange(len(pending))
        todo = rows.take(pa.array(np.asarray(pending, dtype=np.int64)[order], pa.int64()))
        stats, t_gen = _Stats(), time.perf_counter()
        batches = _run_local(cfg, todo, backend) if cfg.executor == "local" else _run_ray(cfg, todo)
        for table in batches:
            store.append(table)
            stats.add(table)
            echo(f"  committed {stats.rows}/{len(pending)} rows ({stats.errors} errors; "
                 f"{rate_eta(stats.rows, len(pending), time.perf_counter() - t_gen)})")
        summary = GenerationSummary(out=cfg.out, planned=n_fit, already_done=n_fit - len(pending),
                                    generated=stats.rows, errors=stats.errors, prompt_tokens=stats.prompt_tokens,
                                    completion_tokens=stats.completion_tokens, wall_s=time.perf_counter() - t0,
                                    projected=projected.describe())
        unfinished = len(_pending(rows, store.done_keys(retry_errors=True)))
        store.manifest["cost"] = LEDGER.snapshot()  # the cost ledger, as every manifest carries it
        store.finish(summary.to_dict() | {"failed_rows": unfinished}, complete=unfinished == 0)
    if over:
        if stats.rows and stats.errors == stats.rows:
            _report_failures(cfg, stats, unfinished, echo)  # every call failed: that is the news
        raise budget.stop(over)
    _report_failures(cfg, stats, unfinished, echo)
    return summary


def _report_failures(cfg: GenerateConfig, stats: "_Stats", unfinished: int, echo: Callable[[str], None]) -> None:
    """Every call of this invocation failed: an error (nothing usable came back). Some failed: say so, with advice
    the caller accepts (`cpo generate` takes --retry-errors; verify, nightly and run retry failed calls on rerun)."""
    where = _endpoint(cfg)
    retry = ("rerun the same command (failed calls are retried)" if cfg.retry_errors
             else "rerun the same command with --retry-errors")
    if stats.rows and stats.errors == stats.rows:
        raise BackendError(
            f"all {stats.rows} LLM calls of this run failed (first error: {stats.first_error}); the rows are "
            f"recorded as failed in {cfg.out} and the run is not complete.\n  fix: check the backend{where}, "
            f"then {retry}")
    if unfinished:
        first = (f"first error of this run: {stats.first_error}" if stats.first_error is not None else
                 "they failed in an earlier run of this command; their errors are in the shards' error column")
        echo(f"warning: {unfinished} planned row(s) have no result without error ({first}); the run is not "
             f"complete: {retry}")


def _endpoint(cfg: GenerateConfig) -> str:
    from cpo_engine.utils import redact_url

    if cfg.backend.kind == "openai":
        return f" (is the server at {redact_url(cfg.backend.openai.base_url)} up? --base-url)"
    return f" ({cfg.backend.kind}, model {cfg.backend.model})"


def _plan(cfg: GenerateConfig, queries: pa.Table, prompts: pa.Table,
          echo: Callable[[str], None]) -> tuple[pa.Table, list[str], CostProjection]:
    """Planned rows cut to the budget, their rendered inputs, and the projection (echoed)."""
    rows = plan_rows(cfg, queries, prompts)
    texts = input_texts(rows, cfg)
    tokens = estimate_tokens(texts)
    price, max_tokens = cfg.design.price_per_1k_tokens, cfg.sampling.max_tokens
    full = project_cost(tokens, max_tokens, price)
    n_fit = budget_cut(tokens, max_tokens, cfg.design)
    projected = project_cost(tokens[:n_fit], max_tokens, price)
    echo(f"design {cfg.design.kind}: {queries.num_rows} queries x {prompts.num_rows} prompts -> {full.describe()}")
    if n_fit < len(texts):
        echo(f"budget cap: running the balanced first {n_fit} of {len(texts)} calls -> {projected.describe()}")
    return rows.slice(0, n_fit), texts[:n_fit], projected


def _pending(rows: pa.Table, done: set[tuple[str, str, str, int]]) -> list[int]:
    keys = zip(*(rows.column(c).to_pylist() for c in ("run_id", "query_id", "prompt_id", "sample")))
    return [i for i, k in enumerate(keys) if tuple(k) not in done]


@dataclass
class _Stats:
    rows: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_error: str | None = None

    def add(self, t: pa.Table) -> None:
        self.rows += t.num_rows
        self.errors += t.num_rows - t.column("error").null_count
        if self.first_error is None and t.column("error").null_count < t.num_rows:
            self.first_error = next(e for e in t.column("error").to_pylist() if e is not None)
        prompt = int(np.sum(t.column("prompt_tokens").to_numpy(zero_copy_only=False)))
        completion = int(np.sum(t.column("completion_tokens").to_numpy(zero_copy_only=False)))
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        LEDGER.llm(t.num_rows, prompt, completion)  # the run's cost ledger (manifest "cost")


def _run_local(cfg: GenerateConfig, todo: pa.Table, backend: Any) -> Iterator[pa.Table]:
    """The in-process executor: the same three stages as the Ray pipeline, one shard at a time."""
    if todo.num_rows == 0:
        return
    engine = EngineStage(backend if backend is not None else cfg.backend, cfg.sampling)
    try:
        for start in range(0, todo.num_rows, cfg.shard_size):
            batch = todo.slice(start, cfg.shard_size)
            yield grade(engine(render(batch, cfg.template, cfg.sampling)), cfg.grader)
    finally:
        if backend is None:
            engine.backend.close()


def _run_ray(cfg: GenerateConfig, todo: pa.Table) -> Iterator[pa.Table]:
    if todo.num_rows == 0:
        return
    from cpo_engine.generation.ray_pipeline import ray_generate

    yield from ray_generate(todo, cfg)


__all__ = ["GenerateConfig", "RayConfig", "GenerationSummary", "generate_triplets", "load_inputs", "plan_rows",
           "identity", "CallBudget", "call_budget"]
