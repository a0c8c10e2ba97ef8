"""`cpo loop`: the whole CPO loop on a real LLM, small enough for a CPU.

1. **Task**: a table of ``query_id, query_text, gold_answer`` (the user's ``--queries FILE``, graded by
   ``--grader SPEC``; or a built-in task, written as such a file first), split by query into training
   queries and fresh held-out queries per round, and seed prompts (:mod:`cpo_engine.generation.tasks`),
   written under ``OUT/data``. A table too small for the rounds asked is refused here, before any LLM
   call; then the loop prints the most LLM calls and tokens it will make (``--max-calls`` caps them).
2. **Generate**: every seed prompt on every training query with the LLM (``OUT/generate``, the
   resumable store of `cpo generate`).
3. **Fit -> search -> verify**, once per round, as a `cpo run` in ``OUT/round-<r>``: fit on the
   training triplets (plus, from round 1 on, every triplet verified in earlier rounds), search new
   prompts with the edit proposer, then run the searched top-K, every seed prompt and the per-query
   policy on the round's held-out queries with the LLM, measured against the incumbent: in round 0 the seed
   with the best mean over all training queries, then whatever a round promoted on measured evidence (the
   champion; the loop recommends the last one, ``final`` in the report).
4. **Report**: ``OUT/loop_report.json`` / ``.md``: did the searched prompt beat the seed prompts when
   the LLM actually ran it, with what interval, and how well the predicted uplift matched.

Without an endpoint the packaged SmolLM2-135M-Instruct runs on a local llama.cpp server started for
the loop. Rerunning the same command resumes: LLM calls already made are never repeated and a round
whose run folder finished with the same settings is not rerun. A loop stopped by ``--max-calls``
(:class:`~cpo_engine.exceptions.BudgetExhausted`) resumes the same way with a larger cap.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cpo_engine.causal.evidence import MEASURED
from cpo_engine.exceptions import ConfigError
from cpo_engine.search.proposers import proposer_spec
from cpo_engine.utils import atomic_write_json, atomic_write_parquet, atomic_write_text
from cpo_engine.settings import LLMConfig, LoopConfig, RunConfig
from cpo_engine.workflows.verify import calibration_line, generate_config, labelled, verified_triplets

if TYPE_CHECKING:
    from cpo_engine.generation.types import Backend


@dataclass
class LoopResult:
    out: Path
    report: dict[str, Any]


@contextmanager
def llm_endpoint(cfg: LoopConfig, out: Path) -> Iterator[LLMConfig]:
    """The loop's LLM section, pointed at ``cfg.endpoint`` or at the llama.cpp server(s) started for the
    block (OpenAI-compatible backend; ``server.parallel`` processes, the requests spread over them with 2 in
    flight per process); other backends are used as configured."""
    llm = cfg.generation
    if llm.backend.kind != "openai":
        yield llm
        return

    def at(url: str, more: list[str] | None = None) -> LLMConfig:
        openai = replace(llm.backend.openai, base_url=url)
        if more:
            openai = replace(openai, base_urls=list(more),
                             max_concurrency=max(openai.max_concurrency, 2 * (len(more) + 1)))
        return replace(llm, backend=replace(llm.backend, openai=openai))

    if cfg.endpoint:
        yield at(cfg.endpoint)
        return
    from cpo_engine.generation.local_server import LlamaCppServer

    server = LlamaCppServer(cfg.server, out / "llama_server.log")
    with server as url:
        yield at(url, server.base_urls[1:])


def generate_training(cfg: LoopConfig, llm: LLMConfig, paths: dict[str, Path], out: Path,
                      backend: Backend | None = None,
                      echo: Callable[[str], None] = print) -> pa.Table:
    """Every seed prompt on every training query (resumable); the error-free rows as triplets."""
    from cpo_engine.generation import generate_triplets, read_generated

    gen = generate_config(llm, paths["train"], paths["prompts"], out / "generate", "train",
                          replace(cfg.verify, seed=cfg.seed))
    generate_triplets(gen, backend=backend, echo=echo)
    return verified_triplets(read_generated(out / "generate"))


def training_table(out: Path, train: pa.Table, r: int) -> Path:
    """Round ``r``'s training data: the generated triplets plus those verified in rounds < r."""
    tables = [train] + [pq.read_table(out / f"round-{i}" / "verify" / "verified_triplets.parquet") for i in range(r)]
    common = [c for c in tables[0].column_names if all(c in t.column_names for t in tables)]
    table = pa.concat_tables([t.select(common) for t in tables], promote_options="permissive")
    return atomic_write_parquet(table, out / "data" / f"train_round_{r}.parquet")


def round_config(cfg: LoopConfig, llm: LLMConfig, data: Path, queries: Path, run_dir: Path,
                 incumbent: str | None = None) -> RunConfig:
    """The `cpo run` of one round: fit and search on ``data``, verify on the round's ``queries`` against
    ``incumbent`` (a prompt id; None: the run's own, the logged prompt its model ranks best)."""
    from cpo_engine.data.config import DataConfig

    verify = replace(cfg.verify, queries=str(queries), max_queries=cfg.task.n_verify, seed=cfg.seed,
                     incumbent=incumbent)
    run_cfg = RunConfig(data=DataConfig(path=str(data)), embed=cfg.embed, pca=cfg.pca, causal=cfg.causal,
                        selection=cfg.selection, beam=cfg.beam, holdout=cfg.holdout, generation=llm, verify=verify,
                        out=str(run_dir), seed=cfg.seed)
    # `cpo run` refuses a proposer that needs an LLM server (it starts none); here the loop's endpoint serves it.
    run_cfg.proposer = (replace(cfg.proposer, llm_base_url=llm.backend.openai.base_url)
                        if proposer_spec(cfg.proposer.kind).needs_server else cfg.proposer)
    return run_cfg


def next_incumbent(incumbent: str, verification: dict[str, Any]) -> str:
    """The incumbent of the next round: the prompt this round promoted on measured evidence, else this round's
    (a promoted per-query policy is not a prompt: the incumbent stays)."""
    best = verification.get("best_promotable") or {}
    return str(best["id"]) if best.get("kind") == "static" else incumbent


def finished_round(run_cfg: RunConfig) -> dict[str, Any] | None:
    """The verification of a round whose run folder finished with these settings (else None). The
    endpoint's URL is not a setting: a local server gets a new port every time."""
    run_dir = Path(run_cfg.out or "")
    manifest, report = run_dir / "manifest.json", run_dir / "verify" / "verification.json"
    if not (manifest.is_file() and report.is_file()):
        return None
    recorded = json.loads(manifest.read_text())
    if recorded.get("status") != "ok" or _settings(recorded["config"]) != _settings(json.loads(
            json.dumps(asdict(run_cfg), default=str))):
        return None
    return json.loads(report.read_text())


def _settings(config: dict[str, Any]) -> dict[str, Any]:
    config = json.loads(json.dumps(config))
    openai = config.get("generation", {}).get("backend", {}).get("openai", {})
    for key in ("base_url", "base_urls", "max_concurrency"):  # where the server(s) listen, and how many
        openai.pop(key, None)
    config.get("proposer", {}).pop("llm_base_url", None)
    return config


def task_grader(cfg: LoopConfig) -> str:
    """The grader of the loop's LLM calls: ``generation.grader``, except that a built-in task other than
    ``addition`` left at the default grader (numeric) is graded with its own
    (:data:`~cpo_engine.generation.tasks.TASK_GRADERS`: a label for ``sentiment``, both kinds for ``mixed``)."""
    from cpo_engine.generation.tasks import TASK_GRADERS
    from cpo_engine.settings import LLMConfig

    grader = cfg.generation.grader
    if cfg.task.queries is None and grader == LLMConfig.grader:
        return TASK_GRADERS.get(cfg.task.kind, grader)
    return grader


def check_training_size(cfg: LoopConfig) -> None:
    """Round 0 fits on the ``n_train`` training queries less the share `cpo run` holds out: in
    ``causal.cv`` cross-fitting folds, and the static prompt's choice needs ``min_rows`` training rows of
    a prompt (:class:`~cpo_engine.causal.static_choice.StaticChoiceConfig`). A ConfigError before any LLM
    call when they are too few, naming the ``--train-queries`` that suffices (and the table size it needs)."""
    import math

    from cpo_engine.causal.static_choice import StaticChoiceConfig
    from cpo_engine.workflows.common import MIN_QUERIES_PER_FOLD

    cv = cfg.causal.cv if isinstance(cfg.causal.cv, int) and not isinstance(cfg.causal.cv, bool) else 2
    min_rows = StaticChoiceConfig().min_rows
    need = max(cv * MIN_QUERIES_PER_FOLD, math.ceil(min_rows / cfg.verify.samples))

    def fitted(n: int) -> int:
        return n - max(1, int(round(cfg.holdout.test_fraction * n)))

    n = cfg.task.n_train
    if fitted(n) >= need:
        return
    least = next(m for m in range(n, 100 * need + 100) if fitted(m) >= need)
    raise ConfigError(
        f"--train-queries {n} is too few: each round's fit holds out {n - fitted(n)} of them "
        f"(holdout.test_fraction={cfg.holdout.test_fraction}) and fits on the other {fitted(n)}, but needs at "
        f"least {need} (causal.cv={cfg.causal.cv} folds of {MIN_QUERIES_PER_FOLD} queries; "
        f"the static prompt's choice: {min_rows} rows per prompt at {cfg.verify.samples} sample(s) a query)\n"
        f"  fix: pass --train-queries {least} or more (the queries table then needs "
        f"{least + cfg.rounds * cfg.task.n_verify} queries for {cfg.rounds} round(s))")


def call_plan(cfg: LoopConfig, paths: dict[str, Path]) -> dict[str, Any]:
    """The most LLM calls the loop makes, and its tokens: the seed prompts on the training queries, then
    per round the verified prompts on the round's queries (every seed prompt with ``verify.seeds=all``,
    plus what earlier rounds verified, plus ``verify.top_k`` searched prompts). Generated tokens are at most
    ``max_tokens`` a call; prompt tokens are estimated as `cpo generate` projects them (the rendered input,
    4 characters a token; a searched prompt as long as the longest seed prompt)."""
    from cpo_engine.generation.builder import input_texts, plan_rows
    from cpo_engine.generation.design import estimate_tokens

    prompts = pq.read_table(paths["prompts"])
    texts, top_k = prompts["prompt_text"].to_pylist(), cfg.verify.top_k
    gen = generate_config(cfg.generation, paths["train"], paths["prompts"], Path(cfg.out) / "generate", "train",
                          replace(cfg.verify, seed=cfg.seed))

    def block(queries: Path, arm_texts: list[str]) -> tuple[int, int]:
        arms = pa.table({"prompt_id": [f"p{i}" for i in range(len(arm_texts))], "prompt_text": arm_texts})
        rows = plan_rows(gen, pq.read_table(queries), arms)
        return rows.num_rows, int(estimate_tokens(input_texts(rows, gen)).sum()) if rows.num_rows else 0

    train_calls, prompt_tokens = block(paths["train"], texts)
    longest, rounds = max(texts, key=len), []
    for r in range(cfg.rounds):
        n_arms = (len(texts) + r * top_k if cfg.verify.seeds == "all" else 2) + top_k
        calls, tokens = block(paths[f"verify_{r}"], (texts + [longest] * n_arms)[:n_arms])
        rounds.append(calls)
        prompt_tokens += tokens
    calls = train_calls + sum(rounds)
    return {"calls": calls, "train_calls": train_calls, "round_calls": rounds, "seed_prompts": len(texts),
            "max_generated_tokens": calls * cfg.verify.max_tokens, "prompt_tokens_estimate": prompt_tokens}


def power_line(cfg: LoopConfig, plan: dict[str, Any], r: int = 0) -> str:
    """The power statement of round ``r``'s sequential verification, before any call: "with this budget you can
    detect an uplift of X or more" (round r verifies the seeds, what earlier rounds verified and ``top_k``
    searched prompts against the incumbent, on ``n_verify`` queries)."""
    from cpo_engine.causal.sequential import plan_statement, planned_queries
    from cpo_engine.workflows.verify_sequential import budget_calls

    v = cfg.verify
    n_arms = (plan["seed_prompts"] + r * v.top_k if v.seeds == "all" else 2) + v.top_k
    m = n_arms - 1
    n = min(planned_queries(budget_calls(v, cfg.task.n_verify, n_arms), m, v.samples), cfg.task.n_verify)
    return plan_statement(n, m, v.alpha, v.assumed_sd)


def print_plan(cfg: LoopConfig, plan: dict[str, Any], echo: Callable[[str], None] = print) -> None:
    n_prompts = plan["seed_prompts"]
    rounds = ", ".join(f"round {r}: {c}" for r, c in enumerate(plan["round_calls"]))
    echo(f"LLM budget: at most {plan['calls']} calls ({plan['train_calls']} for the training triplets: "
         f"{cfg.task.n_train} queries x {n_prompts} seed prompts x {cfg.verify.samples} sample(s); to verify, "
         f"{rounds}), at most {plan['max_generated_tokens']} generated tokens ({cfg.verify.max_tokens} a call) and "
         f"about {plan['prompt_tokens_estimate']} prompt tokens")
    if proposer_spec(cfg.proposer.kind).needs_server:
        echo(f"  plus the calls of the '{cfg.proposer.kind}' proposer's search (not counted above)")
    if cfg.verify.design == "sequential":
        echo("  verification (sequential, each round): " + power_line(cfg, plan))
    if cfg.max_calls is not None and cfg.max_calls < plan["calls"]:
        echo(f"  --max-calls {cfg.max_calls}: the loop stops after {cfg.max_calls} calls in all (earlier runs' "
             "included); rerun with a larger --max-calls to continue")


def run_loop(cfg: LoopConfig, backend: Backend | None = None) -> LoopResult:
    """Task -> generate -> (fit -> search -> verify) x rounds -> report, in ``cfg.out`` (resumable).

    Every refusal (a bad queries or prompts table, too few queries for the rounds asked, too few
    training queries for the fit) comes before any LLM call; so does the printed budget. With
    ``cfg.max_calls`` the loop raises :class:`~cpo_engine.exceptions.BudgetExhausted` at that many calls."""
    from cpo_engine.generation.builder import call_budget
    from cpo_engine.generation.tasks import write_task
    from cpo_engine.workflows.run import run

    from cpo_engine.data.storage import is_remote
    from cpo_engine.workflows.common import now, refuse_other_kind, staged, write_manifest

    if is_remote(cfg.out):  # run in a local staging folder (a rerun resumes there), uploaded when it finishes
        return staged(cfg, lambda local: run_loop(local, backend))
    started = now()
    cfg = replace(cfg, generation=replace(cfg.generation, grader=task_grader(cfg)))
    refuse_other_kind(cfg.out, "loop")
    check_training_size(cfg)
    out = Path(cfg.out)
    paths = write_task(cfg.task, out / "data", cfg.rounds, cfg.prompts)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "loop_config.json", asdict(cfg))
    plan = call_plan(cfg, paths)
    print_plan(cfg, plan)
    timings: dict[str, float] = {}
    rounds = []
    with call_budget(cfg.max_calls) as budget, llm_endpoint(cfg, out) as llm:
        t0 = time.perf_counter()
        train = generate_training(cfg, llm, paths, out, backend)
        timings["generate"] = time.perf_counter() - t0
        # the champion every round measures against: first the seed with the best mean over all training queries
        # (every seed ran on each: a grid, so the plain mean is unbiased, and the run's own choice sees only the
        # queries its held-out check leaves it), then whatever a round promoted on measured evidence
        incumbent = seed_scores(train)[0]["id"]
        for r in range(cfg.rounds):
            t0 = time.perf_counter()
            run_cfg = round_config(cfg, llm, training_table(out, train, r), paths[f"verify_{r}"], out / f"round-{r}",
                                   incumbent=incumbent)
            verification = finished_round(run_cfg)
            if verification is None:
                verification = run(run_cfg).evaluation["verification"]
            elif budget is not None:
                budget.count(verification["budget"]["calls"])  # made by an earlier run of the loop
            rounds.append({"round": r, "run": str(run_cfg.out), "training_rows": pq.read_metadata(
                run_cfg.data.path).num_rows, "incumbent": incumbent, "verification": verification})
            incumbent = next_incumbent(incumbent, verification)
            timings[f"round_{r}"] = time.perf_counter() - t0
    report = loop_report(cfg, train, rounds, timings)
    report["budget"].update(max_llm_calls=plan["calls"], max_calls=cfg.max_calls)
    atomic_write_json(out / "loop_report.json", report)
    atomic_write_text(out / "loop_report.md", render_loop(report))
    write_manifest(out, "loop", cfg, {"report": out / "loop_report.json", "markdown": out / "loop_report.md",
                                      "config": out / "loop_config.json", "data": out / "data",
                                      **{f"round_{r['round']}": Path(r["run"]) for r in rounds}},
                   started_at=started, budget=report["budget"])
    print(render_loop(report))
    return LoopResult(out, report)


# ------------------------------------------------------------------------------------ report


def seed_scores(train: pa.Table) -> list[dict[str, Any]]:
    """Each seed prompt's mean score on the training queries (measured: the LLM ran them)."""
    g = train.group_by(["prompt_id", "prompt_text"]).aggregate([("score", "mean"), ("score", "count")])
    rows = [{"id": i, "text": t, "train_mean": m, "n": n, "evidence": MEASURED} for i, t, m, n in zip(
        g["prompt_id"].to_pylist(), g["prompt_text"].to_pylist(), g["score_mean"].to_pylist(),
        g["score_count"].to_pylist())]
    return sorted(rows, key=lambda r: -r["train_mean"])


def outcome(run_dir: Path, verification: dict[str, Any], seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """Win, tie or loss of the round's top searched prompt (the model's first choice, fixed before the
    LLM ran it) against the seed prompts, measured on the round's held-out queries: against the seed
    with the best training mean (what one picks without a model) and against the seed that scored
    best on these very queries (chosen after seeing them: it favours the seeds)."""
    from cpo_engine.search import outcome_matrix

    searched = [a for a in verification["arms"] if a["role"] == "searched"]
    if not searched:
        return {"verdict": "no searched prompt was verified", **promotion(verification, "")}
    top = searched[0]
    rows = pq.read_table(Path(run_dir) / "verify" / "verified_triplets.parquet")
    qids = sorted(set(rows.column("query_id").to_pylist()))
    ids = [top["id"]] + [s["id"] for s in seeds]
    Y = outcome_matrix(rows, qids, ids)
    with np.errstate(all="ignore"):
        here = 1 + int(np.nanargmax(np.nanmean(Y[:, 1:], axis=0)))
    method = (top["uplift_vs_baseline"] or {}).get("method", "LLM run")
    vs_train = labelled(Y[:, 0], Y[:, 1], MEASURED, method)
    vs_here = labelled(Y[:, 0], Y[:, here], MEASURED, method)
    verdict = ("not measured" if vs_train is None else "win" if vs_train.ci_low > 0 else
               "loss" if vs_train.ci_high < 0 else "tie")
    return {"verdict": verdict, "searched": {"id": top["id"], "text": top["text"],
                                             "predicted_uplift_vs_incumbent": top["predicted_uplift"],
                                             "measured_value": top["value"]},
            "vs_best_seed_by_training_mean": {"against": seeds[0], "uplift": vs_train.to_dict() if vs_train else None},
            "vs_best_seed_on_these_queries": {"against": next(s for s in seeds if s["id"] == ids[here]),
                                              "uplift": vs_here.to_dict() if vs_here else None},
            **promotion(verification, top["id"]),
            "calibration": verification["calibration"], "searched_coverage": searched_coverage(verification)}


def headline(o: dict[str, Any]) -> str:
    """A round's outcome in one phrase: what was promoted on measured evidence, or that nothing was, with the
    smallest uplift the budget could detect (the model's first pick alone is the ``verdict``)."""
    pr = o.get("promoted")
    if pr:
        return f"promoted `{pr['id']}` ({pr['role']}), measured better than the incumbent"
    power = (o.get("power") or {}).get("detectable_uplift")
    return ("nothing promoted: no prompt was shown better than the incumbent" +
            (f" (this budget detects uplifts of {power:.3f} or more)" if power is not None else ""))


def promotion(verification: dict[str, Any], top_id: str) -> dict[str, Any]:
    """What the round promotes, by the verification's own rule (sequential: a prompt whose confidence sequence
    lies above ``verify.margin``; fixed: a 95% interval above it), and, sequentially, the power statement
    made before spending and the top searched prompt's decision and confidence sequence vs the incumbent."""
    best = verification.get("best_promotable")
    out: dict[str, Any] = {"promoted": None if best is None else {
        "id": best["id"], "text": best.get("text"), "role": best.get("role", best.get("kind")),
        "uplift_vs_incumbent": best.get("uplift_vs_baseline"), "sequential": best.get("sequential")}}
    seq = verification.get("sequential")
    if seq:
        top = next((c for c in seq["candidates"] if c["id"] == top_id), None)
        out.update(power=seq["power"], sequential_calls=seq["calls"], sequential_budget_calls=seq["budget_calls"],
                   top_searched_sequential=top)
    return out


def searched_coverage(verification: dict[str, Any]) -> dict[str, Any]:
    """How often the searched prompts' predicted 95% intervals (with the prompt-level error of a never-logged
    prompt where the model has it: :mod:`cpo_engine.causal.new_prompt_error`) held their measured uplift."""
    arms = [a for a in verification["arms"] if a["role"] == "searched" and a.get("predicted_uplift")
            and a.get("uplift_vs_baseline") and a["predicted_uplift"].get("ci_low") is not None]
    hits = [a["predicted_uplift"]["ci_low"] <= a["uplift_vs_baseline"]["value"] <= a["predicted_uplift"]["ci_high"]
            for a in arms]
    methods = sorted({a["predicted_uplift"].get("method", "") for a in arms})
    return {"prompts": len(arms), "covered": int(sum(hits)), "coverage": (sum(hits) / len(hits)) if hits else None,
            "interval_methods": methods}


def loop_report(cfg: LoopConfig, train: pa.Table, rounds: list[dict[str, Any]],
                timings: dict[str, float]) -> dict[str, Any]:
    n_calls = int(train.num_rows) + sum(r["verification"]["budget"]["calls"] for r in rounds)
    seeds = seed_scores(train)
    return {"format": "cpo-loop/1", "task": asdict(cfg.task) | {"name": cfg.task.name},
            "grader": cfg.generation.grader, "model": cfg.generation.backend.model,
            "budget": {"max_tokens": cfg.verify.max_tokens, "samples": cfg.verify.samples,
                       "temperature": cfg.generation.temperature, "llm_calls": n_calls},
            "seeds": seeds, "rounds": rounds,
            "outcome": [outcome(r["run"], r["verification"], seeds) | {"round": r["round"]} for r in rounds],
            "final": final_prompt(seeds, rounds),
            "timings_s": {k: round(v, 1) for k, v in timings.items()}}


def final_prompt(seeds: list[dict[str, Any]], rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """What the loop recommends: the champion after the last round (the last prompt a round promoted on measured
    evidence, else the first incumbent: the seed with the best training mean), with how it got there."""
    champion, won = seeds[0]["id"], None
    for r in rounds:
        champion = r.get("incumbent") or champion
        after = next_incumbent(champion, r["verification"])
        if after != champion:
            champion, won = after, r["round"]
    arms = [a for r in rounds for a in r["verification"]["arms"]]
    text = next((a["text"] for a in arms if a["id"] == champion),
                next((s["text"] for s in seeds if s["id"] == champion), None))
    how = (f"promoted in round {won}: measured better than the incumbent" if won is not None else
           "the seed with the best training mean: nothing was shown better" if champion == seeds[0]["id"] else
           "the incumbent: nothing was shown better")
    return {"id": champion, "text": text, "how": how}


def _ci(u: dict[str, Any] | None) -> str:
    if not u:
        return "n/a"
    n = f", {u['n']} queries" if u.get("n") else ""
    return f"{u['value']:+.3f} (95% CI {u['ci_low']:+.3f} to {u['ci_high']:+.3f}{n}) [{u['kind']}]"


def render_loop(report: dict[str, Any]) -> str:
    """loop_report.md: seeds, each round's verified prompts, the outcome and the calibration."""
    lines = ["# CPO loop on a real LLM", "",
             f"Task `{report['task'].get('name', report['task']['kind'])}` (grader "
             f"`{report.get('grader', 'numeric')}`): {report['task']['n_train']} training queries, "
             f"{report['task']['n_verify']} fresh held-out queries per round; at most "
             f"{report['budget']['max_tokens']} tokens per answer, temperature {report['budget']['temperature']}, "
             f"{report['budget']['llm_calls']} LLM calls in all.", "",
             "Seed prompts, mean score on the training queries [measured]:", ""]
    lines += [f"- `{s['id']}` {s['train_mean']:.3f}: {s['text']!r}" for s in report["seeds"]]
    for r, o in zip(report["rounds"], report["outcome"]):
        v = r["verification"]
        inc = f"; incumbent `{r['incumbent']}`" if r.get("incumbent") else ""
        lines += ["", f"## Round {r['round']} ({r['training_rows']} training triplets{inc}; run folder {r['run']})", ""]
        for a in v["arms"]:
            val = a["value"]["value"] if a["value"] else float("nan")
            lines.append(f"- {a['role']:<11} `{a['id']}` measured {val:.3f}, uplift vs incumbent "
                         f"{_ci(a['uplift_vs_baseline'])}; predicted "
                         f"{_ci(a['predicted_uplift']) if a['predicted_uplift'] else '-'}: {a['text']!r}")
        p = v["policy"]
        lines.append(f"- per-query policy (leaves the incumbent on {p['share_not_baseline']:.0%} of queries): "
                     f"uplift {_ci(p['uplift_vs_baseline'])}")
        lines += ["", f"**Outcome: {headline(o)}.**"]
        if "searched" in o:
            lines += [f"The model's first pick ({o['verdict']}), its top searched prompt {o['searched']['text']!r}, "
                      "vs the seed prompt with the best "
                      f"training mean {o['vs_best_seed_by_training_mean']['against']['text']!r}: "
                      f"{_ci(o['vs_best_seed_by_training_mean']['uplift'])}; vs the seed that scored best on these "
                      f"very queries {o['vs_best_seed_on_these_queries']['against']['text']!r}: "
                      f"{_ci(o['vs_best_seed_on_these_queries']['uplift'])}."]
        if "promoted" in o:
            pr = o["promoted"]
            seq = (pr or {}).get("sequential")
            lines += ["", "Promoted: " + (
                "nothing (no prompt was shown better than the incumbent)" if pr is None else
                f"`{pr['id']}` ({pr['role']}) {pr['text']!r}, " + (
                    f"{seq['stop_reason']} after {seq['queries']} queries, mean uplift vs incumbent "
                    f"{seq['mean_uplift']:+.3f}, confidence sequence {seq['cs_low']:+.3f} to {seq['cs_high']:+.3f} "
                    f"(fixed-n 95% CI {_ci(pr['uplift_vs_incumbent'])}, not valid after early stopping)" if seq else
                    f"uplift vs incumbent {_ci(pr['uplift_vs_incumbent'])}")) + "."]
        if o.get("power"):
            t = o.get("top_searched_sequential")
            lines += ["", f"Power: {o['power']['statement']}. Used {o['sequential_calls']} of "
                          f"{o['sequential_budget_calls']} LLM calls."]
            if t:
                lines += [f"Top searched prompt, sequentially vs the incumbent: {t['decision']} ({t['stop_reason']} "
                          f"after {t['queries']} queries), mean uplift {t['mean_uplift']:+.3f}, confidence sequence "
                          f"{t['cs_low']:+.3f} to {t['cs_high']:+.3f}."]
        lines += ["", calibration_line(v)]
        sc = o.get("searched_coverage")
        if sc and sc["prompts"]:
            lines += ["", f"Searched prompts: the predicted 95% interval ({'; '.join(sc['interval_methods'])}) held the "
                          f"measured uplift for {sc['covered']} of {sc['prompts']}."]
    if report.get("final"):
        f = report["final"]
        lines += ["", f"**Recommended prompt: `{f['id']}` {f['text']!r} ({f['how']}).**"]
    lines += ["", "Timings (s): " + ", ".join(f"{k} {v}" for k, v in report["timings_s"].items()), ""]
    return "\n".join(lines)


__all__ = ["run_loop", "LoopResult", "llm_endpoint", "generate_training", "training_table", "round_config",
           "check_training_size", "task_grader", "power_line", "promotion", "searched_coverage", "call_plan",
           "print_plan", "finished_round", "loop_report", "render_loop", "seed_scores", "outcome", "next_incumbent",
           "final_prompt"]
