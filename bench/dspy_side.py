"""The DSPy side of bench/bench_vs_dspy.py; runs in .venv-dspy (`INSTALL_DSPY=1 scripts/install_engines.sh`).

One optimizer (MIPROv2 auto="light", BootstrapFewShot, GEPA, or none: the bare signature) with one adapter
(``plain``: :class:`PlainTextAdapter`, or DSPy's own ``chat``) compiles ``question -> answer`` on the training
queries (and the validation queries, for the optimizers that take them) against an OpenAI-compatible endpoint,
then answers every test query once; each answer is graded by the loop's grader (cpo_engine.generation.graders).
LLM calls are counted by the endpoint's counting proxy (``GET <proxy>/_count``), so DSPy's retries, proposal
calls and adapter fallbacks are all counted; the proxy also turns DSPy's ``max_completion_tokens`` into the
``max_tokens`` llama-cpp-python's server reads (without it the server ignores the cap). Writes one JSON file.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import traceback
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dspy
import pyarrow.parquet as pq

from cpo_engine.generation.graders import get_grader


class PlainTextAdapter(dspy.Adapter):
    """Plain chat messages, no field markers: one user message holding the instructions, a newline and the
    inputs, as the loop renders a prompt before a query (template position ``prefix``); few-shot demos come
    first as earlier user/assistant turns rendered the same way (the assistant turn: the demo's output text).
    So a program with no demos sends the very messages the loop sends for the same instruction and query. The
    raw completion is the output field (several output fields: each gets the completion), graded by the loop's
    grader."""

    def format(self, signature: Any, demos: list[dict[str, Any]], inputs: dict[str, Any]) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        outs = list(signature.output_fields)
        instructions = (signature.instructions or "").strip()

        def user(values: dict[str, Any]) -> dict[str, str]:
            text = self._inputs(signature, values)
            return {"role": "user", "content": f"{instructions}\n{text}" if instructions else text}

        for demo in demos:
            if all(demo.get(k) is not None for k in signature.input_fields) and demo.get(outs[-1]) is not None:
                messages += [user(demo), {"role": "assistant", "content": str(demo[outs[-1]])}]
        return messages + [user(inputs)]

    @staticmethod
    def _inputs(signature: Any, values: dict[str, Any]) -> str:
        names = list(signature.input_fields)
        if len(names) == 1:
            return str(values.get(names[0], ""))
        return "\n".join(f"{signature.input_fields[n].json_schema_extra.get('prefix', n + ':')} {values.get(n, '')}"
                         for n in names)

    def parse(self, signature: Any, completion: str) -> dict[str, Any]:
        return {name: completion for name in signature.output_fields}


def proxy_count(proxy: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{proxy}/_count", timeout=10) as r:
        return json.loads(r.read())


def read_examples(path: str) -> list[dspy.Example]:
    t = pq.read_table(path).to_pylist()
    return [dspy.Example(question=r["query_text"], answer=r["gold_answer"], query_id=r["query_id"]).with_inputs(
        "question") for r in t]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-url", required=True, help="OpenAI-compatible endpoint (the counting proxy), .../v1")
    ap.add_argument("--train", required=True)
    ap.add_argument("--val", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--grader", default="numeric")
    ap.add_argument("--optimizer", choices=["none", "mipro", "bootstrap", "gepa"], required=True)
    ap.add_argument("--adapter", choices=["plain", "chat"], default="plain")
    ap.add_argument("--instruction", default="", help="the signature's starting instructions ('' : DSPy's default)")
    ap.add_argument("--max-tokens", type=int, default=16, help="tokens per task call (the loop's verify.max_tokens)")
    ap.add_argument("--proposal-max-tokens", type=int, default=256)
    ap.add_argument("--budget", type=int, default=None, help="GEPA: max_metric_calls")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    proxy = a.base_url.rstrip("/").removesuffix("/v1")
    grader = get_grader(a.grader)
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    common = dict(api_base=a.base_url, api_key="none", cache=False, num_retries=1)
    task_lm = dspy.LM("openai/default", temperature=0.0, max_tokens=a.max_tokens, **common)
    prompt_lm = dspy.LM("openai/default", temperature=1.0, max_tokens=a.proposal_max_tokens, **common)
    adapter = PlainTextAdapter() if a.adapter == "plain" else dspy.ChatAdapter()
    dspy.configure(lm=task_lm, adapter=adapter)

    train, val, test = read_examples(a.train), read_examples(a.val), read_examples(a.test)

    def score(gold: dspy.Example, pred: Any) -> float:
        s = grader.grade(getattr(pred, "answer", None), gold.answer)
        return 0.0 if s is None or (isinstance(s, float) and math.isnan(s)) else float(s)

    def metric(gold: dspy.Example, pred: Any, trace: Any = None) -> float:
        return score(gold, pred)

    def gepa_metric(gold: Any, pred: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None) -> Any:
        s = score(gold, pred)
        return dspy.Prediction(score=s, feedback=f"The correct answer is {gold.answer}; the answer given was "
                                                 f"{getattr(pred, 'answer', None)!r}.")

    sig = dspy.Signature("question -> answer")
    if a.instruction:
        sig = sig.with_instructions(a.instruction)
    student = dspy.Predict(sig)
    result: dict[str, Any] = {"optimizer": a.optimizer, "adapter": a.adapter, "dspy": dspy.__version__,
                              "n_train": len(train), "n_val": len(val), "n_test": len(test),
                              "start_instruction": sig.instructions}
    c0, t0 = proxy_count(proxy), time.perf_counter()
    try:
        if a.optimizer == "mipro":
            opt = dspy.MIPROv2(metric=metric, prompt_model=prompt_lm, task_model=task_lm, auto="light",
                               num_threads=a.threads, seed=a.seed, verbose=False)
            program = opt.compile(student, trainset=train, valset=val)
        elif a.optimizer == "bootstrap":
            program = dspy.BootstrapFewShot(metric=metric, max_bootstrapped_demos=4, max_labeled_demos=4).compile(
                student, trainset=train)
        elif a.optimizer == "gepa":
            reflection = dspy.LM("openai/default", temperature=1.0, max_tokens=max(a.proposal_max_tokens, 512),
                                 **common)
            opt = dspy.GEPA(metric=gepa_metric, max_metric_calls=a.budget, reflection_lm=reflection,
                            num_threads=a.threads, seed=a.seed, track_stats=False)
            program = opt.compile(student, trainset=train, valset=val)
        else:
            program = student
        result["compile_error"] = None
    except Exception as exc:  # recorded: the bench reports which optimizer did not run and why
        result["compile_error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()[-4000:]
        program = None
    c1 = proxy_count(proxy)
    result["compile_s"] = round(time.perf_counter() - t0, 1)
    result["compile_calls"] = c1["calls"] - c0["calls"]
    result["compile_errors_http"] = c1["errors"] - c0["errors"]
    if program is None:
        Path(a.out).write_text(json.dumps(result, indent=1))
        return 1
    pred = program.predictors()[0]
    result["instruction"] = pred.signature.instructions
    result["demos"] = [{k: v for k, v in dict(d).items() if k in ("question", "answer")} for d in pred.demos]

    def answer(ex: dspy.Example) -> dict[str, Any]:
        try:
            out = program(question=ex.question)
            text = out.answer
            err = None
        except Exception as exc:  # an adapter's parse error is a wrong answer, as DSPy's Evaluate scores it
            text, err = None, f"{type(exc).__name__}: {str(exc)[:200]}"
        s = score(ex, dspy.Prediction(answer=text))
        return {"query_id": ex.query_id, "completion": text, "score": s, "error": err}

    t1 = time.perf_counter()
    with ThreadPoolExecutor(a.threads) as pool:
        rows = list(pool.map(answer, test))
    c2 = proxy_count(proxy)
    result["eval_calls"] = c2["calls"] - c1["calls"]
    result["eval_s"] = round(time.perf_counter() - t1, 1)
    result["test"] = rows
    result["test_mean"] = sum(r["score"] for r in rows) / max(1, len(rows))
    result["test_errors"] = sum(r["error"] is not None for r in rows)
    Path(a.out).write_text(json.dumps(result, indent=1))
    print(f"dspy {a.optimizer}/{a.adapter}: compile {result['compile_calls']} calls, test mean "
          f"{result['test_mean']:.3f} on {len(rows)} ({result['test_errors']} errors)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
