"""Programmatic tasks for the real-LLM loop: queries with gold answers and seed prompts, no download.

A task is a pool of distinct queries, each with its gold answer, drawn without replacement by a
seed: the first ``n_train`` become the training queries (the seed prompts run on them to make the
triplets the model learns from) and each further block of ``n_verify`` is one round's held-out
verification queries. Training and verification queries never share a text.

``addition``: single-digit additions ("What is 7 + 5?", "Add 7 and 5.", ...: 9 x 9 digit pairs in
four phrasings, 324 queries), graded by the numeric grader. It suits a small model on a CPU: with
greedy decoding and a 16-token budget SmolLM2-135M-Instruct gets between 7% and 70% of them right
depending on the prompt (measured with llama.cpp, docs/generation.md), so the prompt's wording
measurably moves the score. The queries are generated here; there is no third-party data to license.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa

from cpo_engine.exceptions import ConfigError
from cpo_engine.utils import atomic_write_parquet

ADDITION_FORMS = ("What is {a} + {b}?", "What is {a} plus {b}?", "Add {a} and {b}.", "Compute {a} + {b}.")

#: Seed prompts of each task: a spread of wordings (an answer trigger, reasoning, terse-answer,
#: explanation, a neutral persona and a reading instruction) for the search to start from.
SEED_PROMPTS: dict[str, tuple[str, ...]] = {
    "addition": (
        "The answer is:",
        "Let's think step by step.",
        "Answer with just the number.",
        "Solve the problem and explain your reasoning.",
        "You are a helpful assistant.",
        "Read the question carefully, then answer it.",
    ),
}


def addition_pool() -> list[tuple[str, str, str]]:
    """Every (query_id, query_text, gold answer) of the addition task, in a fixed order."""
    out = []
    for f, form in enumerate(ADDITION_FORMS):
        for a in range(1, 10):
            for b in range(1, 10):
                out.append((f"add-{a}-{b}-f{f}", form.format(a=a, b=b), str(a + b)))
    return out


#: task name -> function returning its query pool (query_id, query_text, gold answer).
TASKS: dict[str, Callable[[], list[tuple[str, str, str]]]] = {"addition": addition_pool}


@dataclass
class TaskConfig:
    """Which task the loop runs and how many queries it draws (the ``task`` section of `cpo loop`)."""

    kind: str = "addition"
    """A key of :data:`TASKS`."""
    n_train: int = 60
    """Training queries: every seed prompt runs on each."""
    n_verify: int = 40
    """Held-out queries per verification round (fresh queries every round)."""
    seed: int = 0
    """Seed of the draw."""

    def __post_init__(self) -> None:
        if self.kind not in TASKS:
            raise ConfigError(f"task.kind '{self.kind}' is not a task; choose one of {', '.join(TASKS)}")
        if self.n_train < 2 or self.n_verify < 2:
            raise ConfigError(f"task.n_train and task.n_verify must be >= 2, got {self.n_train}, {self.n_verify}")


def draw_queries(cfg: TaskConfig, rounds: int = 1) -> tuple[pa.Table, list[pa.Table]]:
    """(training queries, one held-out block per round): disjoint draws from the task's pool.

    Tables have ``query_id, query_text, gold_answer, task``.
    """
    pool = TASKS[cfg.kind]()
    need = cfg.n_train + rounds * cfg.n_verify
    if need > len(pool):
        raise ConfigError(f"task '{cfg.kind}' has {len(pool)} queries; {cfg.n_train} training + {rounds} x "
                          f"{cfg.n_verify} verification queries need {need}: lower task.n_train/n_verify or rounds")
    order = np.random.default_rng(cfg.seed).permutation(len(pool))

    def block(lo: int, hi: int) -> pa.Table:
        rows = [pool[i] for i in order[lo:hi]]
        return pa.table({"query_id": [r[0] for r in rows], "query_text": [r[1] for r in rows],
                         "gold_answer": [r[2] for r in rows], "task": [cfg.kind] * len(rows)})

    verify = [block(cfg.n_train + r * cfg.n_verify, cfg.n_train + (r + 1) * cfg.n_verify) for r in range(rounds)]
    return block(0, cfg.n_train), verify


def seed_prompts(kind: str, path: str | None = None) -> pa.Table:
    """The seed prompts (``prompt_id, prompt_text``): a user's table when ``path`` is given, else the task's."""
    if path:
        from cpo_engine.data import read_table

        table = read_table(path)
        missing = [c for c in ("prompt_id", "prompt_text") if c not in table.column_names]
        if missing:
            from cpo_engine.exceptions import DataError

            raise DataError(f"the seed prompts table lacks {missing}", source=str(path), column=missing[0],
                            fix="a prompts table needs prompt_id and prompt_text")
        return table.select(["prompt_id", "prompt_text"])
    texts = SEED_PROMPTS[kind]
    return pa.table({"prompt_id": [f"seed{i}" for i in range(len(texts))], "prompt_text": list(texts)})


def write_task(cfg: TaskConfig, folder: str | Path, rounds: int = 1, prompts: str | None = None) -> dict[str, Path]:
    """Write ``train_queries.parquet``, ``verify_queries_<r>.parquet`` and ``seed_prompts.parquet``
    under ``folder`` (atomically; the same config always writes the same files)."""
    folder = Path(folder)
    train, verify = draw_queries(cfg, rounds)
    paths = {"train": atomic_write_parquet(train, folder / "train_queries.parquet"),
             "prompts": atomic_write_parquet(seed_prompts(cfg.kind, prompts), folder / "seed_prompts.parquet")}
    for r, t in enumerate(verify):
        paths[f"verify_{r}"] = atomic_write_parquet(t, folder / f"verify_queries_{r}.parquet")
    return paths


__all__ = ["TaskConfig", "TASKS", "SEED_PROMPTS", "ADDITION_FORMS", "addition_pool", "draw_queries", "seed_prompts",
           "write_task"]
