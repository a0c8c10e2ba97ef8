"""LLM throughput of the loop's local llama.cpp server: calls/s and generated tokens/s, one stream vs parallel.

`cpo loop`'s wall time is its LLM calls. llama-cpp-python's server answers one request at a time (a lock
around its one model), so requests sent concurrently to one server only queue; parallelism comes from
several server processes (``server.parallel``), the OpenAI backend spreading the requests over them
(``backend.openai.base_urls``). This measures, on the same machine and the same requests (the loop's:
SmolLM2-135M-Instruct GGUF, a seed prompt before an addition query, greedy, 16 tokens):

- ``1x2t seq``: one server with 2 threads, one request at a time;
- ``1x2t c4``: the same server, 4 requests in flight (the backend's concurrency alone);
- ``2x1t c4``: two servers with 1 thread each, 4 requests in flight spread over both (``server.parallel=2``);
- ``1x1t seq``: one server with 1 thread, one request at a time.

Each configuration: start its server(s), a warm-up batch, then ``--repeats`` timed batches of ``--calls``
requests; the median is reported. Load average before and after is recorded (the machine may be shared).

    python bench/bench_llm_throughput.py --calls 48 --repeats 3
writes bench/results/llm_throughput_<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import time
from pathlib import Path

CONFIGS = {"1x2t seq": (1, 2, 1), "1x2t c4": (1, 2, 4), "2x1t c4": (2, 1, 4), "1x1t seq": (1, 1, 1)}


def requests(n: int, offset: int) -> list:
    from cpo_engine.generation.tasks import SEED_PROMPTS, addition_pool
    from cpo_engine.generation.types import GenerationRequest, RowKey, SamplingConfig

    pool, prompts = addition_pool(), SEED_PROMPTS["addition"]
    sampling = SamplingConfig(temperature=0.0, max_tokens=16)
    out = []
    for i in range(n):
        _, text, _ = pool[(offset + i) % len(pool)]
        prompt = prompts[(offset + i) % len(prompts)]
        out.append(GenerationRequest(key=RowKey("bench", f"q{offset + i}", "p", 0), sampling=sampling,
                                     messages=({"role": "user", "content": f"{prompt}\n\n{text}"},)))
    return out


def measure(parallel: int, threads: int, concurrency: int, calls: int, repeats: int) -> dict:
    from cpo_engine.generation.backends.openai_http import OpenAIBackend, OpenAIConfig
    from cpo_engine.generation.local_server import LlamaCppServer, LocalServerConfig

    server = LlamaCppServer(LocalServerConfig(threads=threads, parallel=parallel))
    with server as url:
        backend = OpenAIBackend(OpenAIConfig(base_url=url, base_urls=server.base_urls[1:], max_concurrency=concurrency,
                                             timeout_s=300.0))
        backend.generate(requests(max(4, concurrency), 10_000))  # warm-up
        runs = []
        for r in range(repeats):
            batch = requests(calls, r * calls)
            t0 = time.perf_counter()
            out = backend.generate(batch)
            wall = time.perf_counter() - t0
            errors = sum(o.error is not None for o in out)
            tokens = sum(o.completion_tokens for o in out if o.error is None)
            runs.append({"wall_s": round(wall, 2), "calls_per_s": round(calls / wall, 3),
                         "tokens_per_s": round(tokens / wall, 1), "completion_tokens": tokens, "errors": errors})
    med = {k: statistics.median(r[k] for r in runs) for k in ("wall_s", "calls_per_s", "tokens_per_s")}
    return {"server_processes": parallel, "threads_each": threads, "in_flight": concurrency, "runs": runs,
            "median": med}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=48, help="requests per timed batch")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--out", default=f"bench/results/llm_throughput_{dt.date.today():%Y%m%d}.json")
    args = ap.parse_args()
    loadavg = lambda: Path("/proc/loadavg").read_text().split()[:3]  # noqa: E731
    import os

    record = {"model": "SmolLM2-135M-Instruct GGUF (llama-cpp-python server)", "cpus": os.cpu_count(),
              "calls_per_batch": args.calls, "repeats": args.repeats, "max_tokens": 16, "temperature": 0.0,
              "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "results": {}}
    for name in args.configs:
        before = loadavg()
        res = measure(*CONFIGS[name], args.calls, args.repeats)
        res["loadavg_before"], res["loadavg_after"] = before, loadavg()
        record["results"][name] = res
        print(name, json.dumps(res["median"]), "load", before, "->", res["loadavg_after"], flush=True)
    base = record["results"].get("1x2t seq")
    if base:
        record["speedup_calls_per_s_vs_1x2t_seq"] = {
            k: round(v["median"]["calls_per_s"] / base["median"]["calls_per_s"], 2) for k, v in record["results"].items()}
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
