"""Each built-in loop task's seed prompts on SmolLM2-135M-Instruct: the share of queries each answers right.

Checks that the model partly does every task (some seed between ~10% and ~80%), so the prompt's wording can
move the score. Runs the loop's own path (the task's queries file, its grader, `cpo generate` with the loop's
LLM settings: greedy, 16 tokens, prompt before the query) on a local llama.cpp server.

    python bench/bench_task_seeds.py --tasks sentiment comparison mixed --queries 40
writes bench/results/task_seeds_<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pyarrow.compute as pc


def main() -> None:
    from cpo_engine.generation import generate_triplets, read_generated
    from cpo_engine.generation.local_server import LlamaCppServer, LocalServerConfig
    from cpo_engine.generation.tasks import TASKS, TaskConfig, write_task
    from cpo_engine.settings import LoopConfig
    from cpo_engine.workflows.loop import task_grader
    from cpo_engine.workflows.verify import generate_config

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", nargs="+", default=list(TASKS))
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--out", default=f"bench/results/task_seeds_{dt.date.today():%Y%m%d}.json")
    args = ap.parse_args()
    record = {"model": "SmolLM2-135M-Instruct (GGUF, llama.cpp)", "queries_per_task": args.queries,
              "loadavg_start": Path("/proc/loadavg").read_text().split()[:3], "tasks": {}}
    with tempfile.TemporaryDirectory() as tmp, LlamaCppServer(LocalServerConfig(), Path(tmp) / "server.log") as url:
        for kind in args.tasks:
            cfg = LoopConfig(task=TaskConfig(kind=kind, n_train=args.queries, n_verify=2))
            llm = replace(cfg.generation, grader=task_grader(cfg), backend=replace(
                cfg.generation.backend, openai=replace(cfg.generation.backend.openai, base_url=url)))
            paths = write_task(cfg.task, Path(tmp) / kind)
            t0 = time.perf_counter()
            generate_triplets(generate_config(llm, paths["train"], paths["prompts"], Path(tmp) / kind / "gen", "m",
                                              cfg.verify), echo=lambda s: None)
            rows = read_generated(Path(tmp) / kind / "gen")
            rows = rows.filter(pc.is_null(rows["error"]))
            g = rows.group_by("prompt_text").aggregate([("score", "mean"), ("score", "count")])
            seeds = {t: round(m, 3) for t, m in zip(g["prompt_text"].to_pylist(), g["score_mean"].to_pylist())}
            record["tasks"][kind] = {"grader": llm.grader, "seconds": round(time.perf_counter() - t0, 1),
                                     "calls": rows.num_rows, "seed_means": seeds,
                                     "examples": [{"query": q, "answer": a, "score": s} for q, a, s in zip(
                                         *(rows[c].to_pylist()[:6] for c in ("query_text", "response_text", "score")))]}
            print(kind, json.dumps(record["tasks"][kind], indent=1), flush=True)
    record["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
