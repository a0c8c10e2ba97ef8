"""Two days of real logs cut from the bundled example's mawps grid (every query x prompt, 5 LLM samples per cell:
the cell means are the known truth): day 1 is observational (each query logged with one prompt drawn uniformly
from ToT, gpt4_9 and Decomp, with its propensity 1/3, one sample), day 2 is a grid of other queries over Decomp,
plain, ToT and Dis (every sample). On the grid plain is clearly the best prompt (0.64 correct vs Decomp's 0.46),
so a night on day 2 has a measured reason to replace a Decomp that went live on day 1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DAY1_PROMPTS = ("ToT", "gpt4_9", "Decomp")
DAY2_PROMPTS = ("Decomp", "plain", "ToT", "Dis")


def write_two_days(folder: Path, n1: int = 300, n2: int = 150, seed: int = 0) -> tuple[Path, Path]:
    """day1.parquet and day2.parquet in ``folder`` (disjoint queries: day 2's are fresh)."""
    from cpo_engine.data import load_example

    t = load_example(tasks=("mawps",)).to_pandas()
    qids = list(dict.fromkeys(t["query_id"]))
    day1 = qids[:n1]
    pick = dict(zip(day1, np.random.default_rng(seed).choice(DAY1_PROMPTS, size=n1)))
    d1 = t[t["query_id"].isin(day1) & (t["sample"] == 0)]
    d1 = d1[d1["prompt_id"] == d1["query_id"].map(pick)].assign(propensity=1.0 / len(DAY1_PROMPTS))
    grid = t[t["prompt_id"].isin(DAY2_PROMPTS)]
    full = grid.groupby("query_id")["prompt_id"].nunique() == len(DAY2_PROMPTS)  # every cell observed
    day2 = [q for q in qids[n1:] if full.get(q, False)][:n2]
    d2 = grid[grid["query_id"].isin(day2)]
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "day1.parquet", folder / "day2.parquet"
    for d, path in zip((d1, d2), paths):
        pq.write_table(pa.Table.from_pandas(d, preserve_index=False), path)
    return paths


def new_queries(folder: Path, n: int = 20, start: int = 1000) -> Path:
    """Unscored queries (query_id, query_text) no night logged, for `cpo assign`."""
    from cpo_engine.data import load_example

    t = load_example(tasks=("mawps",)).select(["query_id", "query_text"]).to_pandas().drop_duplicates("query_id")
    path = folder / "new_queries.parquet"
    pq.write_table(pa.Table.from_pandas(t.iloc[start:start + n], preserve_index=False), path)
    return path
