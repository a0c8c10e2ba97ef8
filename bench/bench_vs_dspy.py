"""`cpo loop` vs DSPy's optimizers on the same local LLM, the same queries and counted LLM calls.

One llama.cpp server with the packaged SmolLM2-135M-Instruct (cpo_engine.generation.local_server), behind a
counting proxy (bench/counting_proxy.py: every chat/text completion request is one call, whoever sends it).
Per task (``--task``, default every built-in task of cpo_engine.generation.tasks.TASKS):

1. ``loop``: `cpo loop --task T --endpoint PROXY` (``--train-queries``, ``--verify-queries``, one round): the seed
   prompts on the training queries, fit, search, verification on its held-out block. ``cpo_loop`` is what the
   loop recommends (its ``final``: a prompt promoted on measured evidence, else its incumbent, the seed with the
   best training mean); also reported: its top searched prompt (the model's first choice, fixed before the LLM
   ran it) and the arm that measured best on the loop's own verification block (picked without the promotion
   rule, with calls the loop paid for).
2. ``seeds``: every seed prompt, the bare query (zero-shot) and the loop's prompts on the test queries (``final``:
   the loop's recommendation when the seeds step did not score it); the best seed is the one
   with the best training mean in the loop's training triplets (what one picks without an optimizer), the
   random choice is the expected score of a uniformly drawn seed (the mean over seeds, per query).
3. Loop variants on the same training queries, each scored like the loop: ``loopex`` (the worked-examples
   proposer: two demonstrations from training successes per prompt, as chat turns), ``loopdemos`` (four labelled
   demonstrations spread over the questions, MIPROv2's kind), ``matched`` (the default loop at a DSPy step's
   call budget, ``--match``, default MIPROv2 with the plain adapter: as many verification queries as the extra
   calls pay for, so the two spend the same).
4. DSPy 3.4.1 in .venv-dspy (bench/dspy_side.py), each a separate process: MIPROv2 (auto="light"),
   BootstrapFewShot and GEPA (max_metric_calls = the loop's calls less the seed selection's; SmolLM2 is also
   the reflection LM), with a plain-text adapter (the loop's message layout, raw completion graded by the
   loop's grader) and with DSPy's ChatAdapter. DSPy starts from the best seed's text (so it can only add to
   what the seeds give), trains on the loop's training queries and validates on the loop's verification
   queries; the seed selection's calls (seeds x training queries, made by the loop) are added to DSPy's count.

Every final program/prompt then answers the same fresh test queries (never seen by either side: the last
``--n-test`` queries of the task's seeded permutation, disjoint from the loop's draw), graded by the task's
grader; paired per-query differences vs the best seed get a t interval and a bootstrap interval.
Results: bench/results/vs_dspy_<date>.json and .md, rewritten after every step; each step's raw result is kept
under ``--work`` so a rerun skips finished steps.

Run (long; in the background): ``INSTALL_DSPY=1 scripts/install_engines.sh`` once, then
``nohup nice -n 5 .venv/bin/python bench/bench_vs_dspy.py > runs/bench_vs_dspy.log 2>&1 &``; ``--run STEPS`` runs
only those steps (the others are read from their files), to queue steps across tasks in the order one wants.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from counting_proxy import CountingProxy  # noqa: E402

DEFAULT_STEPS = ("loop", "seeds", "final", "loopex", "loopdemos", "mipro-plain", "matched", "bootstrap-plain", "mipro-chat",
                 "bootstrap-chat", "gepa-plain")


def task_grader(task: str) -> str:
    from cpo_engine.generation import tasks

    return getattr(tasks, "TASK_GRADERS", {}).get(task, "numeric")


def write_test(task: str, n_train: int, n_verify: int, n_test: int, seed: int, folder: Path,
               loop_data: Path) -> Path:
    """The last ``n_test`` queries of the task's seeded permutation (the loop draws from its start)."""
    from cpo_engine.generation.tasks import TaskConfig, builtin_table, draw_queries
    from cpo_engine.utils import atomic_write_parquet

    pool = builtin_table(task).num_rows
    n_test = min(n_test, pool - n_train - n_verify)
    if n_test < 20:
        raise SystemExit(f"task {task}: {pool} queries leave {n_test} test queries after {n_train} training + "
                         f"{n_verify} verification; lower --n-train/--n-verify")
    _, (test,) = draw_queries(TaskConfig(kind=task, n_train=pool - n_test, n_verify=n_test, seed=seed))
    assert_disjoint(task, test, loop_data)
    return atomic_write_parquet(test, folder / "test_queries.parquet")


def assert_disjoint(task: str, test: Any, loop_data: Path) -> None:
    """Stop when a test query is among a loop's training or verification queries (``loop_data``: its task files)."""
    seen = set()
    for f in ("train_queries.parquet", "verify_queries_0.parquet"):
        seen |= set(pq.read_table(loop_data / f, columns=["query_id"]).column(0).to_pylist())
    clash = seen & set(test.column("query_id").to_pylist())
    if clash:
        raise SystemExit(f"task {task}: {len(clash)} test queries are among the loop's ({sorted(clash)[:3]})")


@functools.lru_cache(maxsize=1)
def loop_template() -> Any:
    """The template `cpo loop` renders its calls with (its default LLM section)."""
    from cpo_engine.settings import LoopConfig

    return LoopConfig().generation.template


def ask(url: str, prompt: str, query: str, max_tokens: int) -> str | None:
    """One call in the loop's layout (its template: the prompt, a newline and the query as the user turn, worked
    examples as earlier chat turns; greedy)."""
    import httpx

    from cpo_engine.generation.templating import build_request
    from cpo_engine.generation.types import RowKey, SamplingConfig

    req = build_request(loop_template(), RowKey("bench", "q", "p", 0), query, prompt,
                        SamplingConfig(temperature=0.0, max_tokens=max_tokens))
    body = {"model": "default", "temperature": 0.0, "top_p": 1.0, "max_tokens": max_tokens,
            "messages": list(req.messages)}
    for _ in range(3):
        try:
            r = httpx.post(f"{url}/chat/completions", json=body, timeout=300)
            if r.status_code == 200:
                return r.json()["choices"][0]["message"]["content"]
        except httpx.HTTPError:
            pass
        time.sleep(2)
    return None


def run_prompts(url: str, prompts: dict[str, str], test: list[dict[str, Any]], grader_spec: str,
                max_tokens: int, threads: int) -> dict[str, list[float]]:
    from cpo_engine.generation.graders import get_grader

    grader = get_grader(grader_spec)
    out = {}
    for pid, text in prompts.items():
        with ThreadPoolExecutor(threads) as pool:
            answers = list(pool.map(lambda r: ask(url, text, r["query_text"], max_tokens), test))
        scores = []
        for a, r in zip(answers, test):
            s = grader.grade(a, r["gold_answer"]) if a is not None else float("nan")
            scores.append(0.0 if s is None or s != s else float(s))
        out[pid] = scores
        print(f"  {pid}: {np.mean(scores):.3f} ({text[:60]!r})", flush=True)
    return out


def paired(a: list[float], b: list[float], seed: int = 0) -> dict[str, Any]:
    """Mean of a - b per query, its 95% t interval and 95% bootstrap (percentile, 10,000 resamples) interval."""
    from scipy import stats

    d = np.asarray(a, float) - np.asarray(b, float)
    n, m = len(d), float(d.mean())
    se = float(d.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    t = float(stats.t.ppf(0.975, n - 1)) if n > 1 else float("nan")
    boots = np.random.default_rng(seed).choice(d, size=(10_000, n), replace=True).mean(axis=1)
    return {"diff": m, "t_ci": [m - t * se, m + t * se] if se > 0 else [m, m],
            "bootstrap_ci": [float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))], "n": n}


def matched_n_verify(target: int, train_calls: int, loop_calls: int, n_verify: int) -> int:
    """Verification queries that bring a loop to ``target`` calls: the first loop spent ``loop_calls - train_calls``
    on ``n_verify`` queries (one call per arm and query), so each query costs that over ``n_verify``."""
    per_query = (loop_calls - train_calls) / n_verify
    if per_query <= 0:
        raise SystemExit(f"the loop made no verification calls ({loop_calls} in all, {train_calls} on the seeds)")
    return max(n_verify, int((target - train_calls) // per_query))


def last_round(rep: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A loop report's last outcome and the arm that measured best on that round's verification queries."""
    arms = rep["rounds"][-1]["verification"]["arms"]
    return rep["outcome"][-1], max((x for x in arms if x.get("value")), key=lambda x: x["value"]["value"])


class Bench:
    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.work = Path(a.work)
        self.date = a.date or datetime.now(timezone.utc).strftime("%Y%m%d")
        self.out_json = Path(a.out_dir) / f"vs_dspy_{self.date}.json"
        self.results: dict[str, Any] = json.loads(self.out_json.read_text()) if self.out_json.is_file() else {}
        self.results.setdefault("tasks", {})

    def step_file(self, task: str, step: str) -> Path:
        return self.work / task / f"step_{step}.json"

    def save(self) -> None:
        a = self.a
        self.results.update({
            "format": "cpo-bench-vs-dspy/1", "date": self.date, "model": "SmolLM2-135M-Instruct (GGUF, llama.cpp)",
            "settings": {"n_train": a.n_train, "n_verify": a.n_verify, "n_test": a.n_test, "seed": a.seed,
                         "max_tokens": a.max_tokens, "chat_max_tokens": a.chat_max_tokens, "server_threads": a.threads},
            "loadavg_at_save": Path("/proc/loadavg").read_text().split()[:3],
            "updated": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        self.out_json.parent.mkdir(parents=True, exist_ok=True)
        self.out_json.write_text(json.dumps(self.results, indent=1))
        self.out_json.with_suffix(".md").write_text(render(self.results))

    def run_task(self, task: str, url: str, proxy: CountingProxy) -> None:
        a, folder = self.a, self.work / task
        folder.mkdir(parents=True, exist_ok=True)
        grader = task_grader(task)
        res = self.results["tasks"].setdefault(task, {"grader": grader, "methods": {}, "steps": {}})
        res["steps"] = {}  # from the step files only (a step file removed to rerun it leaves no stale entry)
        loop_dir = folder / "loop"
        for step in a.steps.split(","):
            if step != "loop" and not (loop_dir / "loop_report.json").is_file():
                print(f"[{task}] {step}: skipped (no loop report)", flush=True)
                continue
            f = self.step_file(task, step)
            if not f.is_file() and (a.report_only or (a.run and step not in a.run.split(","))):
                continue
            if not f.is_file():
                print(f"[{task}] {step} ... ({time.strftime('%H:%M:%S')}, load {os.getloadavg()[0]:.1f})",
                      flush=True)
                c0, t0 = proxy.snapshot(), time.perf_counter()
                try:
                    data = getattr(self, "step_" + step.split("-")[0])(task, step, url, grader, folder)
                except subprocess.CalledProcessError as exc:
                    data = {"error": f"exit {exc.returncode}", "stderr": (exc.stderr or "")[-3000:]}
                c1 = proxy.snapshot()
                data["proxy"] = {k: c1[k] - c0[k] for k in c0}
                data["wall_s"] = round(time.perf_counter() - t0, 1)
                data["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
                f.write_text(json.dumps(data, indent=1))
            res["steps"][step] = json.loads(f.read_text())
            summarize(res)
            self.save()

    # ---------------------------------------------------------------- steps
    def step_loop(self, task: str, step: str, url: str, grader: str, folder: Path) -> dict[str, Any]:
        a = self.a
        cmd = [str(ROOT / ".venv/bin/cpo"), "loop", "--task", task, "--out", str(folder / "loop"),
               "--train-queries", str(a.n_train), "--verify-queries", str(a.n_verify), "--endpoint", url,
               "--grader", grader, "--seed", str(a.seed)]
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        (folder / "loop.log").write_text(p.stdout + p.stderr)
        if p.returncode != 0:
            raise subprocess.CalledProcessError(p.returncode, cmd, p.stdout, p.stderr)
        rep = json.loads((folder / "loop" / "loop_report.json").read_text())
        write_test(task, a.n_train, a.n_verify, a.n_test, a.seed, folder, folder / "loop" / "data")
        out, best_arm = last_round(rep)
        return {"cmd": " ".join(cmd), "llm_calls_reported": rep["budget"]["llm_calls"], "seeds": rep["seeds"],
                "train_calls": sum(s["n"] for s in rep["seeds"]),
                "final": rep.get("final"), "incumbent": rep["rounds"][-1].get("incumbent"),
                "promoted": (out.get("promoted") or {}).get("text"),
                "top_searched": out.get("searched", {}).get("text"), "verdict": out.get("verdict"),
                "best_verified_arm": {"id": best_arm["id"], "text": best_arm["text"], "role": best_arm["role"],
                                      "value": best_arm["value"]["value"]},
                "timings_s": rep.get("timings_s")}

    def loop_variant(self, task: str, url: str, grader: str, folder: Path, name: str, sub: str, n_verify: int,
                     extra: list[str], copy_data: bool) -> dict[str, Any]:
        """`cpo loop` again in ``folder/sub`` on the same training queries (``extra``: its other flags; the first
        loop's task files copied when ``copy_data``), its recommended, top searched and best verified prompts
        scored on the test queries (prefixed ``name``)."""
        import shutil

        a, dst = self.a, folder / sub
        if copy_data and not (dst / "data").exists():
            shutil.copytree(folder / "loop" / "data", dst / "data")
        cmd = [str(ROOT / ".venv/bin/cpo"), "loop", "--task", task, "--out", str(dst), "--train-queries", str(a.n_train),
               "--verify-queries", str(n_verify), "--endpoint", url, "--grader", grader, "--seed", str(a.seed), *extra]
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        (folder / f"{sub}.log").write_text(p.stdout + p.stderr)
        if p.returncode != 0:
            raise subprocess.CalledProcessError(p.returncode, cmd, p.stdout, p.stderr)
        rep = json.loads((dst / "loop_report.json").read_text())
        out, best_arm = last_round(rep)
        prompts = {f"{name}_final": rep["final"]["text"], f"{name}_top_searched": out.get("searched", {}).get("text"),
                   f"{name}_best_verified": best_arm["text"]}
        prompts = {k: v for k, v in prompts.items() if v}
        test = pq.read_table(folder / "test_queries.parquet")
        assert_disjoint(task, test, dst / "data")
        test = test.to_pylist()
        return {"cmd": " ".join(cmd), "llm_calls_reported": rep["budget"]["llm_calls"], "n_verify": n_verify,
                "final": rep["final"], "promoted": (out.get("promoted") or {}).get("text"), "prompts": prompts,
                "scores": run_prompts(url, prompts, test, grader, a.max_tokens, a.threads)}

    def step_loopex(self, task: str, step: str, url: str, grader: str, folder: Path) -> dict[str, Any]:
        """`cpo loop` again on the same training and verification queries with the worked-examples proposer
        (``--set proposer.kind=examples``: candidates are the seeds plus demonstrations from training successes,
        as DSPy's few-shot optimizers add them), on the first loop's task files (the same queries); its prompts
        are scored on the test queries."""
        return self.loop_variant(task, url, grader, folder, "loopex", "loop_examples", self.a.n_verify,
                                 ["--set", "proposer.kind=examples"], copy_data=True)

    def step_loopdemos(self, task: str, step: str, url: str, grader: str, folder: Path) -> dict[str, Any]:
        """The worked-examples loop closer to what MIPROv2 ships: four demonstrations a prompt with the gold
        answers (labelled, as MIPROv2's), spread over the questions (``choose=diverse``), on the first loop's
        queries."""
        return self.loop_variant(task, url, grader, folder, "loopdemos", "loop_demos4", self.a.n_verify,
                                 ["--set", "proposer.kind=examples", "--set", "proposer.options.k=4", "--set",
                                  "proposer.options.choose=diverse", "--set", "proposer.options.answer_column=gold_answer"],
                                 copy_data=True)

    def step_matched(self, task: str, step: str, url: str, grader: str, folder: Path) -> dict[str, Any]:
        """`cpo loop` at the call budget of a DSPy step (``--match``, default MIPROv2 with the plain adapter): the
        same training queries and search, and as many verification queries as the extra calls pay for
        (verification costs one call per arm and query), so the loop spends what DSPy spent."""
        loop = json.loads(self.step_file(task, "loop").read_text())
        match = self.step_file(task, self.a.match)
        if not match.is_file():
            raise SystemExit(f"[{task}] step matched needs step {self.a.match} first (its calls are the budget)")
        target = json.loads(match.read_text())["compile_calls"] + loop["train_calls"]
        n_verify = matched_n_verify(target, loop["train_calls"], loop["llm_calls_reported"], self.a.n_verify)
        data = self.loop_variant(task, url, grader, folder, "matched", "loop_matched", n_verify, [], copy_data=False)
        return data | {"match": self.a.match, "target_calls": target}

    def step_seeds(self, task: str, step: str, url: str, grader: str, folder: Path) -> dict[str, Any]:
        loop = json.loads(self.step_file(task, "loop").read_text())
        test = pq.read_table(folder / "test_queries.parquet").to_pylist()
        prompts = {s["id"]: s["text"] for s in loop["seeds"]} | {"zero_shot": ""}
        final = (loop.get("final") or {}).get("text")
        if final and final not in prompts.values():
            prompts["loop_final"] = final
        if loop["top_searched"]:
            prompts["loop_top_searched"] = loop["top_searched"]
        if loop["best_verified_arm"]["text"] not in prompts.values():
            prompts["loop_best_verified"] = loop["best_verified_arm"]["text"]
        scores = run_prompts(url, prompts, test, grader, self.a.max_tokens, self.a.threads)
        return {"prompts": prompts, "query_ids": [r["query_id"] for r in test], "scores": scores}

    def step_mipro(self, task: str, step: str, url: str, grader: str, folder: Path) -> dict[str, Any]:
        return self.dspy(task, step, url, grader, folder)

    step_bootstrap = step_gepa = step_none = step_mipro

    def step_final(self, task: str, step: str, url: str, grader: str, folder: Path) -> dict[str, Any]:
        """The loop's recommended prompt on the test queries, when the seeds step did not score its text (a seeds
        step run before the loop reported it)."""
        loop, seeds = (json.loads(self.step_file(task, s).read_text()) for s in ("loop", "seeds"))
        final = (loop.get("final") or {}).get("text")
        if not final or final in seeds["prompts"].values():
            return {"prompts": {}, "scores": {}, "note": "already scored by the seeds step"}
        test = pq.read_table(folder / "test_queries.parquet").to_pylist()
        return {"prompts": {"loop_final": final},
                "scores": run_prompts(url, {"loop_final": final}, test, grader, self.a.max_tokens, self.a.threads)}

    def dspy(self, task: str, step: str, url: str, grader: str, folder: Path) -> dict[str, Any]:
        a = self.a
        optimizer, adapter = step.split("-")
        loop = json.loads(self.step_file(task, "loop").read_text())
        data = folder / "loop" / "data"
        out = folder / f"dspy_{step}.json"
        out.unlink(missing_ok=True)  # a failed run must not leave an older run's result to be read as its own
        cmd = [a.dspy_python, str(ROOT / "bench" / "dspy_side.py"), "--base-url", url, "--train",
               str(data / "train_queries.parquet"), "--val", str(data / "verify_queries_0.parquet"), "--test",
               str(folder / "test_queries.parquet"), "--grader", grader, "--optimizer", optimizer, "--adapter", adapter,
               "--instruction", loop["seeds"][0]["text"], "--threads", str(a.threads), "--seed", str(a.seed),
               "--max-tokens", str(a.max_tokens if adapter == "plain" else a.chat_max_tokens), "--out", str(out)]
        if optimizer == "gepa":
            # the loop's calls less the seed grid's (a loop step that resumed a finished folder counted fewer)
            calls = max(loop["proxy"]["calls"], loop["llm_calls_reported"])
            cmd += ["--budget", str(max(50, calls - loop["train_calls"]))]
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        (folder / f"dspy_{step}.log").write_text(p.stdout + p.stderr)
        if not out.is_file():
            raise subprocess.CalledProcessError(p.returncode, cmd, p.stdout, p.stderr)
        return json.loads(out.read_text())


def summarize(res: dict[str, Any]) -> None:
    """Each method's test mean, its LLM calls and its paired difference vs the best seed."""
    steps = res["steps"]
    if "loop" not in steps or "error" in steps["loop"] or "seeds" not in steps or "error" in steps["seeds"]:
        return
    loop, seeds = steps["loop"], steps["seeds"]
    sc, qids = dict(seeds["scores"]), seeds["query_ids"]
    prompts = dict(seeds["prompts"])
    if "final" in steps and "error" not in steps["final"]:
        sc.update(steps["final"]["scores"])
        prompts.update(steps["final"]["prompts"])
    seed_ids = [s["id"] for s in loop["seeds"]]
    best = loop["seeds"][0]["id"]
    # a loop step that resumed a finished loop folder made fewer calls through the proxy than the loop did
    train_calls, loop_calls = loop["train_calls"], max(loop["proxy"]["calls"], loop["llm_calls_reported"])
    methods: dict[str, dict[str, Any]] = {}

    def add(name: str, scores: list[float], calls: int | None, what: str, **extra: Any) -> None:
        methods[name] = {"test_mean": float(np.mean(scores)), "llm_calls": calls, "what": what, **extra,
                         "vs_best_seed": paired(scores, sc[best])}

    add("best_seed", sc[best], train_calls, f"seed with the best training mean ({best}): {loop['seeds'][0]['text']!r}")
    add("zero_shot", sc["zero_shot"], 0, "the bare query, no prompt")
    add("random_seed", list(np.mean([sc[i] for i in seed_ids], axis=0)), 0,
        "expected score of a uniformly random seed prompt (mean over seeds per query)")
    oracle = max(seed_ids, key=lambda i: np.mean(sc[i]))
    add("oracle_seed", sc[oracle], None, f"seed best on the test queries themselves ({oracle}; chosen after seeing them)")
    final = loop.get("final") or {}
    key = next((k for k, v in prompts.items() if final and v == final.get("text") and k in sc), None)
    if key:
        add("cpo_loop", sc[key], loop_calls, f"the loop's recommended prompt ({final['how']}): {final['text']!r}")
    if "loop_top_searched" in sc:
        add("cpo_loop_top_searched", sc["loop_top_searched"], loop_calls,
            f"the model's first pick, the loop's top searched prompt (not what it recommends unless promoted): "
            f"{loop['top_searched']!r}")
    key = "loop_best_verified" if "loop_best_verified" in sc else next(
        (k for k, v in prompts.items() if v == loop["best_verified_arm"]["text"]), None)
    if key:
        add("cpo_loop_best_verified", sc[key], loop_calls,
            "arm with the best mean on the loop's own verification queries, picked without the promotion rule: "
            f"{loop['best_verified_arm']['text']!r}")
    variants = {"matched": ("cpo_loop_matched", "the loop at {match}'s budget ({n_verify} verification queries)"),
                "loopex": ("cpo_loop_examples", "the loop with the worked-examples proposer"),
                "loopdemos": ("cpo_loop_demos4", "the loop with four labelled worked examples spread over the questions")}
    for step, (name, what) in variants.items():
        ex = steps.get(step)
        if not ex or "error" in ex:
            continue
        calls, what = ex["llm_calls_reported"], what.format(**ex)
        add(name, ex["scores"][f"{step}_final"], calls,
            f"{what}, its recommended prompt ({ex['final']['how']}): {ex['final']['text'][:300]!r}")
        if f"{step}_top_searched" in ex["scores"]:
            add(f"{name}_top_searched", ex["scores"][f"{step}_top_searched"], calls,
                f"its top searched prompt: {ex['prompts'][f'{step}_top_searched'][:300]!r}")
        add(f"{name}_best_verified", ex["scores"][f"{step}_best_verified"], calls,
            f"its arm best on its own verification queries: {ex['prompts'][f'{step}_best_verified'][:300]!r}")
    for step, d in steps.items():
        if step in ("loop", "seeds", "final", *variants):
            continue
        if "test" not in d:
            spent = d.get("compile_calls", d.get("proxy", {}).get("calls"))  # before it failed, + the seed grid's
            methods[f"dspy_{step}"] = {"error": d.get("compile_error") or d.get("error"),
                                       "llm_calls": None if spent is None else spent + train_calls}
            continue
        by = {r["query_id"]: r["score"] for r in d["test"]}
        add(f"dspy_{step}", [by[q] for q in qids], d["compile_calls"] + train_calls,
            f"DSPy {d['optimizer']} ({d['adapter']} adapter) from the best seed", compile_calls=d["compile_calls"],
            instruction=d.get("instruction"), n_demos=len(d.get("demos") or []), test_errors=d.get("test_errors"),
            compile_s=d.get("compile_s"))
    res["methods"] = methods
    res["n_test"] = len(qids)


def _ci(c: dict[str, Any]) -> str:
    return (f"{c['diff']:+.3f} (t {c['t_ci'][0]:+.3f} to {c['t_ci'][1]:+.3f}; "
            f"bootstrap {c['bootstrap_ci'][0]:+.3f} to {c['bootstrap_ci'][1]:+.3f})")


def render(results: dict[str, Any]) -> str:
    s = results.get("settings", {})
    lines = ["# cpo loop vs DSPy on SmolLM2-135M-Instruct", "",
             f"{results.get('model')}; temperature 0; {s.get('max_tokens')} tokens a task call "
             f"({s.get('chat_max_tokens')} with DSPy's ChatAdapter, whose field markers need them); "
             f"{s.get('n_train')} training + {s.get('n_verify')} verification queries (both sides), fresh test "
             f"queries; seed {s.get('seed')}. LLM calls counted at the server (a counting proxy); a method's calls "
             "include the seed selection's (seeds x training queries). Paired differences are per test query vs "
             "the best seed (95% intervals). Load average at the last save: "
             f"{' '.join(results.get('loadavg_at_save', []))}. Updated {results.get('updated')}.", ""]
    for task, res in results.get("tasks", {}).items():
        lines += [f"## {task} (grader `{res['grader']}`, {res.get('n_test', '?')} test queries)", "",
                  "| method | test mean | LLM calls | vs best seed |", "|---|---|---|---|"]
        for name, m in res.get("methods", {}).items():
            if "error" in m:
                why = " ".join(str(m["error"]).split())[:160].replace("|", "/")
                lines.append(f"| {name} | failed: {why} | {m.get('llm_calls')} | |")
            else:
                lines.append(f"| {name} | {m['test_mean']:.3f} | {m['llm_calls'] if m['llm_calls'] is not None else '-'}"
                             f" | {_ci(m['vs_best_seed'])} |")
        lines.append("")
        for name, m in res.get("methods", {}).items():
            if "error" not in m:
                extra = (f" instruction {m['instruction'][:200]!r}, {m['n_demos']} demos, {m['test_errors']} "
                         "adapter errors on test;" if "instruction" in m else "")
                lines.append(f"- `{name}`: {m['what']};{extra}")
        lines.append("")
    if results.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in results["notes"]] + [""]
    return "\n".join(lines)


def main() -> int:
    from cpo_engine.generation.local_server import LlamaCppServer, LocalServerConfig
    from cpo_engine.generation.tasks import TASKS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", action="append", help="a built-in task (repeatable); default: every task of TASKS")
    ap.add_argument("--steps", default=",".join(DEFAULT_STEPS))
    ap.add_argument("--n-train", type=int, default=60)
    ap.add_argument("--n-verify", type=int, default=40)
    ap.add_argument("--n-test", type=int, default=100)
    ap.add_argument("--match", default="mipro-plain", help="the DSPy step whose calls the matched loop spends")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--chat-max-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2, help="llama.cpp threads and concurrent requests")
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench_vs_dspy"))
    ap.add_argument("--out-dir", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--date", default=None, help="results file date (default: today, UTC)")
    ap.add_argument("--dspy-python", default=str(ROOT / ".venv-dspy" / "bin" / "python"))
    ap.add_argument("--run", default=None, help="run only these of --steps (comma-separated; the rest are read from "
                    "their files when finished): queues steps across tasks in the order one wants")
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite the results from the finished steps' files; no server, no LLM call")
    a = ap.parse_args()
    if not Path(a.dspy_python).is_file():
        raise SystemExit(f"{a.dspy_python} not found: run INSTALL_DSPY=1 scripts/install_engines.sh")
    tasks = a.task or list(TASKS)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise SystemExit(f"unknown task(s) {unknown}; built-in: {', '.join(TASKS)}")
    bench = Bench(a)
    Path(a.work).mkdir(parents=True, exist_ok=True)
    if a.report_only:
        for task in tasks:
            bench.run_task(task, "", CountingProxy(""))
        return 0
    with LlamaCppServer(LocalServerConfig(threads=a.threads, n_ctx=4096), Path(a.work) / "llama_server.log") as up:
        proxy = CountingProxy(up)
        with proxy as url:
            for task in tasks:
                bench.run_task(task, url, proxy)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
