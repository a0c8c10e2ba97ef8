"""The loop's task: a table of queries with gold answers, and seed prompts.

A task is a table ``query_id, query_text, gold_answer`` (Parquet, CSV/TSV or JSONL; another gold column
with ``task.gold_column``), the user's (`cpo loop --queries FILE --grader SPEC`) or a built-in one,
which the package writes as such a file first (``OUT/data/<kind>_queries.parquet``): both then take
the same path. Its queries are drawn without replacement by a seed: the first ``n_train`` become the
training queries (the seed prompts run on them to make the triplets the model learns from) and each
further block of ``n_verify`` is one round's fresh held-out verification queries. Training and
verification queries never share an id or a text.

``addition`` (built in): single-digit additions ("What is 7 + 5?", "Add 7 and 5.", ...: 9 x 9 digit
pairs in four phrasings, 324 queries), graded by the numeric grader. It suits a small model on a CPU:
with greedy decoding and a 16-token budget SmolLM2-135M-Instruct gets between 7% and 70% of them right
depending on the prompt (measured with llama.cpp, docs/generation.md), so the prompt's wording
measurably moves the score. The queries are generated here; there is no third-party data to license.

Three more built-in tasks, generated the same way, each with its own grader (:data:`TASK_GRADERS`) and seed
prompts, and enough queries for 60 training queries and 2 rounds of 200 verification queries. Measured with
the loop's settings (greedy, 16 tokens, the prompt before the query) on 36 training queries per seed prompt,
SmolLM2-135M-Instruct on llama.cpp (``bench/bench_task_seeds.py``, ``bench/results/task_seeds_20261207.json``):

- ``sentiment``: 720 templated one-line reviews (plain "The pasta was superb.", negated "... was not
  superb." and contrastive "X was awful, but Y was superb.": the clause after "but" decides), gold
  ``positive``/``negative`` (balanced), graded by the label the answer names last. The seeds scored 44% to
  61%: the model answers "positive" to most reviews, so it is near chance and the prompt moves it little.
- ``comparison``: 800 "Which is larger, 47 or 52?" / "... smaller ..." questions in four phrasings, gold the
  number, numeric grader. The seeds scored 17% ("You are a helpful assistant.") to 42% ("The answer is:").
- ``mixed``: mixed traffic of the three (all 324 additions, 324 reviews, 324 comparisons), graded by
  :func:`grade_builtin` (a number or a label, by the gold answer): its sub-tasks want different prompts, so a
  per-query choice can beat any single prompt. The seeds scored 28% ("Let's think step by step.") to 50%
  ("Answer with just the number.").
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from cpo_engine.exceptions import ConfigError, DataError, DataWarning
from cpo_engine.utils import atomic_write_parquet

ADDITION_FORMS = ("What is {a} + {b}?", "What is {a} plus {b}?", "Add {a} and {b}.", "Compute {a} + {b}.")

#: Seed prompts of each built-in task: a spread of wordings (an answer trigger, reasoning, terse-answer,
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
    "sentiment": (
        "The answer is:",
        "Let's think step by step.",
        "Answer with one word: positive or negative.",
        "Explain which words show the writer's feeling, then give the label.",
        "You are a helpful assistant.",
        "Read the review carefully, then answer it.",
    ),
    "comparison": (
        "The answer is:",
        "Let's think step by step.",
        "Answer with just the number.",
        "Compare the two numbers and explain your reasoning.",
        "You are a helpful assistant.",
        "Read the question carefully, then answer it.",
    ),
    "mixed": (
        "The answer is:",
        "Let's think step by step.",
        "Answer with just the number.",
        "Answer with one word: positive or negative.",
        "You are a helpful assistant.",
        "Give only the final answer, nothing else.",
    ),
}

#: Seed prompts of a user's task (``--queries``) given without ``--prompts``: the same spread, worded
#: for any task.
GENERIC_SEED_PROMPTS: tuple[str, ...] = (
    "The answer is:",
    "Let's think step by step.",
    "Answer with just the answer, nothing else.",
    "Explain your reasoning, then give the answer.",
    "You are a helpful assistant.",
    "Read the question carefully, then answer it.",
)

#: The columns of a task table (the gold column under its own name in the user's file).
TASK_COLUMNS = ("query_id", "query_text", "gold_answer")


def addition_pool() -> list[tuple[str, str, str]]:
    """Every (query_id, query_text, gold answer) of the addition task, in a fixed order."""
    out = []
    for f, form in enumerate(ADDITION_FORMS):
        for a in range(1, 10):
            for b in range(1, 10):
                out.append((f"add-{a}-{b}-f{f}", form.format(a=a, b=b), str(a + b)))
    return out


#: Words of the ``sentiment`` task's templated reviews: what is reviewed, and adjectives by polarity.
SENTIMENT_SUBJECTS = ("the pasta", "the service", "the room", "the battery", "the screen", "the plot", "the acting",
                      "the delivery", "the staff", "the music", "the price", "the coffee")
SENTIMENT_WORDS = {"positive": ("great", "excellent", "wonderful", "delicious", "amazing", "fantastic", "lovely",
                                "superb"),
                   "negative": ("terrible", "awful", "disappointing", "bland", "horrible", "poor", "dreadful",
                                "mediocre")}
SENTIMENT_FORMS = ('Review: "{text}" Is this review positive or negative?',
                   'Is the following review positive or negative? "{text}"',
                   'Classify the sentiment of this review as positive or negative: "{text}"')
#: The labels of the ``sentiment`` task (its gold answers).
SENTIMENT_LABELS = ("positive", "negative")

COMPARISON_FORMS = (("Which is larger, {a} or {b}?", max), ("Which is smaller, {a} or {b}?", min),
                    ("What is the larger of {a} and {b}?", max), ("Of {a} and {b}, which number is smaller?", min))


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


def sentiment_pool() -> list[tuple[str, str, str]]:
    """Every (query_id, query_text, gold label) of the ``sentiment`` task, in a fixed order: 720 templated
    reviews from the word lists above, a third of each kind: plain ("The pasta was superb."), negated
    ("The pasta was not superb.": the opposite label) and contrastive ("The pasta was superb, but the
    service was awful.": the label of the clause after "but"), each in one of three phrasings, labels balanced."""
    rng = np.random.default_rng(20261207)
    out: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    kinds = ("plain", "negated", "contrast")
    while len(out) < 720:
        i = len(out)
        kind, label = kinds[i % 3], SENTIMENT_LABELS[(i // 3) % 2]
        other = SENTIMENT_LABELS[1 - SENTIMENT_LABELS.index(label)]
        s1, s2 = (SENTIMENT_SUBJECTS[j] for j in rng.choice(len(SENTIMENT_SUBJECTS), 2, replace=False))
        if kind == "plain":
            text = f"{_cap(s1)} was {rng.choice(SENTIMENT_WORDS[label])}."
        elif kind == "negated":
            text = f"{_cap(s1)} was not {rng.choice(SENTIMENT_WORDS[other])}."
        else:
            text = f"{_cap(s1)} was {rng.choice(SENTIMENT_WORDS[other])}, but {s2} was {rng.choice(SENTIMENT_WORDS[label])}."
        query = SENTIMENT_FORMS[int(rng.integers(len(SENTIMENT_FORMS)))].format(text=text)
        if query in seen:
            continue
        seen.add(query)
        out.append((f"sent-{kind}-{i}", query, label))
    return out


def comparison_pool() -> list[tuple[str, str, str]]:
    """Every (query_id, query_text, gold number) of the ``comparison`` task, in a fixed order: 800 questions
    "Which is larger, 47 or 52?" / "... smaller ..." in four phrasings (200 each) on distinct pairs of numbers
    from 1 to 99; the gold answer is the larger or smaller number."""
    rng = np.random.default_rng(20261208)
    out: list[tuple[str, str, str]] = []
    for f, (form, pick) in enumerate(COMPARISON_FORMS):
        pairs: set[tuple[int, int]] = set()
        while len(pairs) < 200:
            a, b = (int(x) for x in rng.choice(np.arange(1, 100), 2, replace=False))
            pairs.add((a, b))
        for a, b in sorted(pairs):
            out.append((f"cmp-{a}-{b}-f{f}", form.format(a=a, b=b), str(pick(a, b))))
    return out


def mixed_pool() -> list[tuple[str, str, str]]:
    """Every (query_id, query_text, gold answer) of the ``mixed`` task: mixed traffic of three sub-tasks that
    want different prompts: all 324 additions, 324 sentiment reviews (gold: a label) and 324 comparisons
    (gold: a number), 972 queries; the query_id's prefix (``add-``, ``sent-``, ``cmp-``) names the sub-task."""
    return addition_pool() + sentiment_pool()[:324] + comparison_pool()[:324]


def grade_builtin(text: str | None, gold: object) -> float:
    """The grader of the ``mixed`` task (``cpo_engine.generation.tasks:grade_builtin``): a numeric gold answer is
    graded as the numeric grader does; a label (``positive``/``negative``) is right when it is the last of the
    labels the answer names."""
    import re

    from cpo_engine.generation.graders import NumericGrader

    g = str(gold).strip().lower()
    if g not in SENTIMENT_LABELS:
        return NumericGrader().grade(text, gold)
    if text is None:
        return float("nan")
    hits = re.findall(r"\b(positive|negative)\b", text.lower())
    return float(bool(hits) and hits[-1] == g)


#: built-in task name -> function returning its query pool (query_id, query_text, gold answer).
TASKS: dict[str, Callable[[], list[tuple[str, str, str]]]] = {"addition": addition_pool, "sentiment": sentiment_pool,
                                                              "comparison": comparison_pool, "mixed": mixed_pool}

#: The grader spec of each built-in task (`cpo loop` grades a built-in task with its own unless --grader is given).
TASK_GRADERS: dict[str, str] = {"addition": "numeric", "sentiment": r"regex:\b(positive|negative)\b",
                                "comparison": "numeric", "mixed": "cpo_engine.generation.tasks:grade_builtin"}


@dataclass
class TaskConfig:
    """Which task the loop runs and how many queries it draws (the ``task`` section of `cpo loop`)."""

    kind: str = "addition"
    """A built-in task (a key of :data:`TASKS`), written as a queries file; ignored when ``queries`` is set."""
    queries: str | None = None
    """The user's task: a table of query_id, query_text and the gold column (Parquet, CSV/TSV, JSONL)."""
    gold_column: str = "gold_answer"
    """Column of ``queries`` holding the gold answer the grader compares with."""
    n_train: int = 60
    """Training queries: every seed prompt runs on each."""
    n_verify: int = 200
    """Held-out queries per verification round (fresh queries every round). With the loop's sequential
    verification of 9 prompts against the incumbent, 200 can detect an uplift of about 0.18 (power 0.8, a
    paired-difference sd of 0.5); 40 only about 0.63."""
    seed: int = 0
    """Seed of the draw."""

    def __post_init__(self) -> None:
        if self.queries is None and self.kind not in TASKS:
            raise ConfigError(f"task.kind '{self.kind}' is not a task; choose one of {', '.join(TASKS)}, or give "
                              "your own queries table with --queries FILE (query_id, query_text, gold_answer)")
        if self.n_train < 2 or self.n_verify < 2:
            raise ConfigError(f"task.n_train and task.n_verify must be >= 2, got {self.n_train}, {self.n_verify}")

    @property
    def name(self) -> str:
        """The task's name in reports: the built-in kind, or the stem of the user's queries file."""
        return Path(str(self.queries)).name.split(".")[0] if self.queries else self.kind

    def needed(self, rounds: int = 1) -> int:
        """Queries the loop draws: the training block and one verification block per round."""
        return self.n_train + rounds * self.n_verify


def builtin_table(kind: str) -> pa.Table:
    """A built-in task as a task table (``query_id, query_text, gold_answer, task``)."""
    if kind not in TASKS:
        raise ConfigError(f"task.kind '{kind}' is not a task; choose one of {', '.join(TASKS)}")
    pool = TASKS[kind]()
    return pa.table({"query_id": [r[0] for r in pool], "query_text": [r[1] for r in pool],
                     "gold_answer": [r[2] for r in pool], "task": [kind] * len(pool)})


def write_example(kind: str, path: str | Path) -> Path:
    """Write the built-in task ``kind`` as a queries file of the `cpo loop --queries` interface (Parquet,
    or CSV/JSONL by the suffix of ``path``); returns its path."""
    table, path = builtin_table(kind), Path(path)
    if path.suffix.lower() in (".csv", ".jsonl", ".json"):
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".csv":
            import pyarrow.csv as pacsv

            pacsv.write_csv(table, path)
        else:
            import json

            path.write_text("".join(json.dumps(r) + "\n" for r in table.to_pylist()))
        return path
    return atomic_write_parquet(table, path)


def _gold_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 1e15 else repr(value)
    return str(value)


def read_task(path: str | Path, gold_column: str = "gold_answer", name: str | None = None) -> pa.Table:
    """A task table from a file, validated: ``query_id, query_text, gold_answer, task`` as strings.

    The query columns are checked as every queries table is (:func:`cpo_engine.data.queries.validate_queries`:
    a missing column names its likely alias); the gold column must be there with no empty value. A repeated
    query_id is an error; a query text repeated under another id is kept once (a warning), so training and
    verification queries never share a text. ``task``: the file's own column, else ``name`` or the file's stem.
    """
    from cpo_engine.data import read_table
    from cpo_engine.data.queries import check_columns, check_unique_ids, validate_queries

    source = str(path)
    table = read_table(path)
    check_columns(table.column_names, source)
    if gold_column not in table.column_names:
        raise DataError(f"no gold answer column '{gold_column}'; found: {', '.join(table.column_names)}",
                        source=source, column=gold_column,
                        fix=f"a task table needs query_id, query_text and {gold_column} (or name your gold column "
                            "with --gold-column)")
    if table.num_rows == 0:
        raise DataError("the table has no rows", source=source, fix="give at least one query per row")
    queries = validate_queries(table, source)
    golds = table.column(gold_column).to_pylist()
    empty = [i for i, g in enumerate(golds) if g is None or (isinstance(g, float) and g != g) or str(g).strip() == ""]
    if empty:
        raise DataError(f"{len(empty)} empty gold answer(s) (row numbers count data rows from 0)", source=source,
                        column=gold_column, rows=empty, fix="give every query its gold answer, or drop those rows")
    ids, texts = queries.column("query_id").to_pylist(), queries.column("query_text").to_pylist()
    check_unique_ids(ids, source)
    tasks = (table.column("task").cast(pa.string()).to_pylist() if "task" in table.column_names
             else [None] * len(ids))
    label = name or Path(source).name.split(".")[0]
    seen: set[str] = set()
    keep = []
    for i, t in enumerate(texts):
        if t not in seen:
            seen.add(t)
            keep.append(i)
    if len(keep) < len(texts):
        warnings.warn(f"{source}: {len(texts) - len(keep)} query text(s) repeat an earlier row's under another "
                      "query_id; each text is used once", DataWarning, stacklevel=2)
    return pa.table({"query_id": [ids[i] for i in keep], "query_text": [texts[i] for i in keep],
                     "gold_answer": [_gold_text(golds[i]) for i in keep],
                     "task": [tasks[i] or label for i in keep]})


def task_table(cfg: TaskConfig) -> pa.Table:
    """The task's queries: the user's file (``cfg.queries``) or the built-in task."""
    return read_task(cfg.queries, cfg.gold_column) if cfg.queries else builtin_table(cfg.kind)


def draw_queries(cfg: TaskConfig, rounds: int = 1, table: pa.Table | None = None,
                 source: str | None = None) -> tuple[pa.Table, list[pa.Table]]:
    """(training queries, one held-out block per round): disjoint draws from the task table (``table``,
    default :func:`task_table`). A table too small for the rounds asked is a ConfigError saying how many
    queries they need. Tables have ``query_id, query_text, gold_answer, task``.
    """
    table = task_table(cfg) if table is None else table
    source = source or (cfg.queries if cfg.queries else f"task '{cfg.kind}'")
    need = cfg.needed(rounds)
    if need > table.num_rows:
        raise ConfigError(f"{source} has {table.num_rows} queries; {cfg.n_train} training + {rounds} x "
                          f"{cfg.n_verify} verification queries need {need}\n  fix: give a table with at least "
                          f"{need} queries, or lower --train-queries / --verify-queries / --rounds")
    order = np.random.default_rng(cfg.seed).permutation(table.num_rows)

    def block(lo: int, hi: int) -> pa.Table:
        return table.take(pa.array(order[lo:hi], pa.int64()))

    verify = [block(cfg.n_train + r * cfg.n_verify, cfg.n_train + (r + 1) * cfg.n_verify) for r in range(rounds)]
    return block(0, cfg.n_train), verify


def seed_prompts(kind: str | None, path: str | None = None) -> pa.Table:
    """The seed prompts (``prompt_id, prompt_text``): a user's table when ``path`` is given, else the
    built-in task's (``kind``), else (``kind`` None: a user's task) :data:`GENERIC_SEED_PROMPTS`."""
    if path:
        from cpo_engine.data import read_table

        table = read_table(path)
        missing = [c for c in ("prompt_id", "prompt_text") if c not in table.column_names]
        if missing:
            raise DataError(f"the seed prompts table lacks {missing}", source=str(path), column=missing[0],
                            fix="a prompts table needs prompt_id and prompt_text")
        table = table.select(["prompt_id", "prompt_text"])
        if table.num_rows < 2:
            raise DataError(f"{table.num_rows} seed prompt(s): the loop compares prompts, it needs at least 2",
                            source=str(path), fix="give at least 2 seed prompts")
        return pa.table({c: table.column(c).cast(pa.string()) for c in ("prompt_id", "prompt_text")})
    texts = SEED_PROMPTS[kind] if kind else GENERIC_SEED_PROMPTS
    return pa.table({"prompt_id": [f"seed{i}" for i in range(len(texts))], "prompt_text": list(texts)})


def write_task(cfg: TaskConfig, folder: str | Path, rounds: int = 1, prompts: str | None = None) -> dict[str, Path]:
    """Write the task's files under ``folder`` (atomically; the same config always writes the same files):
    a built-in task first as its queries file ``<kind>_queries.parquet`` (the shape `--queries` takes),
    then, from the queries file either way, ``train_queries.parquet``, ``verify_queries_<r>.parquet``
    and ``seed_prompts.parquet``. Every refusal (a bad table, too few queries, a bad prompts table)
    comes before anything is written."""
    folder = Path(folder)
    source = cfg.queries
    if source is None:
        source = str(write_example(cfg.kind, folder / f"{cfg.kind}_queries.parquet"))
    table = read_task(source, cfg.gold_column if cfg.queries else "gold_answer", name=cfg.name)
    train, verify = draw_queries(cfg, rounds, table, source)
    prompts_table = seed_prompts(None if cfg.queries else cfg.kind, prompts)
    paths = {"queries": Path(source), "train": atomic_write_parquet(train, folder / "train_queries.parquet"),
             "prompts": atomic_write_parquet(prompts_table, folder / "seed_prompts.parquet")}
    for r, t in enumerate(verify):
        paths[f"verify_{r}"] = atomic_write_parquet(t, folder / f"verify_queries_{r}.parquet")
    return paths


__all__ = ["TaskConfig", "TASKS", "SEED_PROMPTS", "GENERIC_SEED_PROMPTS", "TASK_COLUMNS", "ADDITION_FORMS",
           "addition_pool", "builtin_table", "write_example", "read_task", "task_table", "draw_queries",
           "seed_prompts", "write_task"]
