"""Build the bundled example (cpo_engine/resources/example_triplets.parquet) from the dev data.

Keeps the svamp and mawps queries that ran under all 16 prompts (the `test` rows of Prompt-OIRL),
with every recorded sample of each (query, prompt) cell, numbered in `sample`. Prompt ids are the dev
data's (the bare answer trigger is `plain`; the source logs label it `nan`): the build refuses ids that
read as a missing value.
Usage: python scripts/make_example.py [SRC] [DST]   (SRC default: ../shared/data/prompt_oirl_llama2_dev.parquet)
"""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

SRC = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/prompt_oirl_llama2_dev.parquet")
DST = Path(sys.argv[2] if len(sys.argv) > 2 else "cpo_engine/resources/example_triplets.parquet")
KEEP = ["task", "model", "query_id", "query_text", "prompt_id", "prompt_text", "score", "sample", "gold_answer"]


def main() -> None:
    t = pq.read_table(SRC)
    t = t.filter(pc.is_in(t["task"], pa.array(["svamp", "mawps"])))
    grid_queries = pc.unique(t.filter(pc.equal(t["split"], "test"))["query_id"])
    t = t.filter(pc.is_in(t["query_id"], grid_queries))
    df = t.to_pandas().sort_values(["task", "query_id", "prompt_idx", "split", "item_idx"], kind="stable")
    df["sample"] = df.groupby(["query_id", "prompt_id"]).cumcount().astype("int64")
    missing = sorted(set(df["prompt_id"].astype(str)) & {"nan", "None", "", "null"})
    if missing:
        raise SystemExit(f"{SRC}: prompt ids {missing} read as missing; use the dev data that names them "
                         "(e.g. 'plain')")
    df["score"] = df["score"].astype("int8")
    out = pa.Table.from_pandas(df[KEEP], preserve_index=False)
    out = out.replace_schema_metadata({
        b"cpo_engine.source": b"Prompt-OIRL logs (MIT), GSM8K/SVAMP question texts (MIT); see NOTICE",
    })
    DST.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(out, DST, compression="zstd", compression_level=19, use_dictionary=True)
    print(f"wrote {DST}: {out.num_rows} rows, {DST.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
