"""Generate docs/benchmarks.md from the records in bench/results (never edit that file by hand).

    python scripts/benchmarks_md.py          # rewrites docs/benchmarks.md

Sections: the static prompt on confounded logs (bench/bench_observational.py, latest record), the one
prompt per query calibration (bench/bench_calibration.py, part one_per_query), the newest versions the
ranges allow (scripts/check_latest.sh), and the fresh-clone install and test times.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
METHODS = {"naive": "naive (best logged mean)", "ipw": "IPW argmax", "dr": "DR argmax",
           "engine": "**engine** (default)", "engine_best_estimate": "engine's best estimate, no defaults kept",
           "engine_lcb_keep": "previous rule (best lower bound, most-logged kept)",
           "engine_no_keep": "engine, never keeps the most-logged", "engine_pooled": "engine, DR pooled with the logged mean"}


def latest(pattern: str) -> Path | None:
    found = sorted(RESULTS.glob(pattern))
    return found[-1] if found else None


def _mean(rows, key):
    return sum(r[key] for r in rows) / len(rows) if rows else float("nan")


def observational(path: Path) -> list[str]:
    d = json.loads(path.read_text())
    rows = d["rows"]
    methods = [m for m in METHODS if m in rows[0]]
    out = [f"## The static prompt on confounded logs (`{path.relative_to(ROOT)}`)", "",
           f"Command: `{d['command']}`; {d['seconds']:.0f} s, load average {', '.join(f'{x:.1f}' for x in d['load_average'])} "
           "at the end (the machine's 2 cores also ran other jobs). Regret in points (x100 of a 0/1 score) of the "
           "one prompt each method recommends, against the best true prompt of the full grid; mean over "
           f"{rows[0]['seeds']} seeds. Mechanisms: `difficulty` (latent: beta > 0 gives hard queries the long "
           "prompts, beta < 0 the easy ones) and `length` (observable: long queries get long prompts).", ""]
    out += ["### Mean regret by setting group", "",
            "| group | settings | " + " | ".join(METHODS[m] for m in methods) + " |",
            "|---|---|" + "---|" * len(methods)]
    groups = {}
    for r in rows:
        misled = "naive misled" if r["naive_misled"] else "naive not misled"
        groups.setdefault((r["grid"], r["propensities"], misled), []).append(r)
    for (grid, prop, misled), rs in sorted(groups.items()):
        out.append(f"| {grid}, propensities {prop}, {misled} | {len(rs)} | "
                   + " | ".join(f"{_mean(rs, m):.2f}" for m in methods) + " |")
    out.append(f"| **all** | {len(rows)} | " + " | ".join(f"**{_mean(rows, m):.2f}**" for m in methods) + " |")
    v = d.get("verdict", {})
    out += ["", "### The issue's checks", "",
            f"- settings where the engine's regret exceeds naive's by more than 2 Monte Carlo se (paired by seed): "
            f"{len(v.get('engine_worse_than_naive_beyond_mc_error', []))} of {len(rows)}"
            + (f" ({', '.join(v['engine_worse_than_naive_beyond_mc_error'][:8])})"
               if v.get("engine_worse_than_naive_beyond_mc_error") else "")
            + (f"; of these, latent confounding without propensities (no method can identify the values): "
               f"{len(v['of_which_latent_confounding_without_propensities'])}"
               if "of_which_latent_confounding_without_propensities" in v else ""),
            f"- engine's mean regret where naive is not misled (its regret <= 0.5) or propensities are given: "
            f"{v.get('engine_mean_regret_where_naive_not_misled_or_propensities_given', float('nan')):.2f} (naive "
            f"{v.get('naive_mean_regret_there', float('nan')):.2f}; max of a setting "
            f"{v.get('max_engine_regret_there', float('nan')):.2f})",
            f"- propensities given, naive misled (difficulty beta < 0): engine at most half of naive in every "
            f"setting: {v.get('engine_at_most_half_naive_where_misled_with_propensities')}", ""]
    return out + _every_setting(rows, methods)


def policy(path: Path) -> list[str]:
    d = json.loads(path.read_text())
    pol = d.get("policy_rows") or []
    out = []
    if pol:
        out += [f"## `cpo run`'s per-query policy on confounded logs (`{path.relative_to(ROOT)}`)", "",
                f"Command: `{d['command']}`; {d['seconds']:.0f} s. `cpo run`'s own steps (fit on 70% of the queries, "
                "static choice, per-query policy with its checks and fallback), valued against the grid's truth on "
                "the other 30%: regret in points versus the best true static prompt there; one logged prompt per query.", "",
                "| grid | mechanism | beta | propensities | naive | engine static | engine per-query | falls back | departs |",
                "|---|---|---|---|---|---|---|---|---|"]
        for r in pol:
            out.append(f"| {r['grid']} | {r['mechanism']} | {r['beta']:+.0f} | {r['propensities']} | {r['naive']:.2f} | "
                       f"{r['static']:.2f} | {r['policy']:.2f} | {r['share_fallback']:.0%} | "
                       f"{r['mean_share_departing']:.1%} |")
        out.append("")
    return out


def _every_setting(rows: list, methods: list) -> list[str]:
    out = ["<details><summary>Every setting</summary>", "",
            "| grid | mechanism | beta | k | propensities | " + " | ".join(methods) + " |",
            "|---|---|---|---|---|" + "---|" * len(methods)]
    for r in rows:
        out.append(f"| {r['grid']} | {r['mechanism']} | {r['beta']:+.0f} | {r['logged_per_query']} | {r['propensities']} | "
                   + " | ".join(f"{r[m]:.2f}" for m in methods) + " |")
    return out + ["", "</details>", ""]


def calibration(path: Path) -> list[str]:
    d = json.loads(path.read_text())
    part = d.get("one_per_query")
    if not part:
        return []
    out = [f"## One logged prompt per query: what the engine prints, checked (`{path.relative_to(ROOT)}`, part `one_per_query`)",
           "", "| design | value interval coverage (95%) | heterogeneity test rejects | policy departs (data sets) | "
           "queries departing | static regret |", "|---|---|---|---|---|---|"]
    for name, r in part.items():
        f = lambda k: f"{r[k]['mean']:.3f} +- {r[k]['mc_se']:.3f}"  # noqa: E731
        out.append(f"| {name}, {r['design']['reps']} reps | {f('value_interval_coverage')} | "
                   f"{f('heterogeneity_test_rejects')} | {f('policy_departs_on_any_query')} | "
                   f"{f('share_of_queries_departing')} | {f('static_regret')} |")
    return out + [""]


def check_latest(path: Path) -> list[str]:
    d = json.loads(path.read_text())
    if d.get("passed") is None:
        return [f"## Newest versions the ranges allow (`{path.relative_to(ROOT)}`)", "",
                f"{d['date']}, commit {d['commit']}: `{d['command']}`: {d.get('status', '')}. {d.get('note', '')}", ""]
    moved = ", ".join(f"{k} {v['locked']} -> {v['latest']}" for k, v in d["moved"].items()) or "none"
    return [f"## Newest versions the ranges allow (`{path.relative_to(ROOT)}`)", "",
            f"{d['date']}, commit {d['commit']}: `{d['command']}` resolved {len(d['moved'])} package(s) newer than "
            f"requirements/dev.lock ({moved}); the suite with them: {d['passed']} passed, {d['failed']} failed, "
            f"{d['errors']} errors, {d['skipped']} skipped."
            + ("" if not d["failures"] else " Failed: " + "; ".join(f["test"] for f in d["failures"][:10]) + "."), ""]


def fresh_clone(path: Path) -> list[str]:
    d = json.loads(path.read_text())
    out = [f"## Fresh clone, fresh venv, the README's two commands (`{path.relative_to(ROOT)}`)", "",
           "| run | commit | `bash scripts/run.sh` | `bash scripts/test.sh` | tests | load average |", "|---|---|---|---|---|---|"]
    runs = [r for b in d.get("batches", []) for r in b["runs"]] or d.get("runs", [])  # scripts/fresh_clone.sh's
    for i, r in enumerate(runs, 1):
        out.append(f"| {i} | {r['commit']} | {r['run_sh_s']} s | {r['test_sh_s']} s | {r.get('tests', '')} | "
                   f"{r.get('load', '')} |")
    return out + ["", d.get("note", ""), ""]


def new_prompt_coverage(path: Path) -> list[str]:
    d = json.loads(path.read_text())
    f = lambda c: f"{c['coverage']:.3f} +- {c['mc_se']:.3f} (n {c['n']})"  # noqa: E731
    out = [f"## Interval coverage for prompts never logged (`{path.relative_to(ROOT)}`)", "",
           f"{d['date']}: `{d['command']}` ({d['seconds']:.0f} s, load average {d['load_average_start'][0]:.2f}). Each "
           "prompt of the dev grid held out as never logged; nominal 95% intervals on its predicted uplift over the "
           "best static prompt vs its true uplift on held-out queries (docs/verification.md).", "",
           "| slice | coefficient error only | with the prompt-level error |", "|---|---|---|",
           f"| all | {f(d['old'])} | {f(d['new'])} |"]
    out += [f"| {t} ({r['prompts']} prompts, {r['queries']} queries) | {f(r['old'])} | {f(r['new'])} |"
            for t, r in d["per_task"].items()]
    return out + [""]


def loop_coverage(path: Path) -> list[str]:
    d = json.loads(path.read_text())
    f = lambda c: f"{c['covered']} of {c['n']} ({c['coverage']:.2f})"  # noqa: E731
    out = [f"## Interval coverage over every prompt the loops verified (`{path.relative_to(ROOT)}`)", "",
           f"{d['date']}: `{d['command']}` (no LLM call: the loop records' measured uplifts, searched prompts' "
           "intervals recomputed with the engine's current prompt-level error from each round's stored "
           "leave-one-prompt-out residuals; nominal 95%).", "",
           "| prompts | strict (interval holds the measured uplift) | allowing for the measurement's error |",
           "|---|---|---|", f"| all verified | {f(d['all']['strict'])} | {f(d['all']['allowing_measurement'])} |",
           f"| searched only | {f(d['searched']['strict'])} | {f(d['searched']['allowing_measurement'])} |"]
    out += [f"| {t} | {f(r['strict'])} | {f(r['allowing_measurement'])} |" for t, r in d["per_task"].items()]
    return out + [""]


def loop_tasks(paths: list[Path]) -> list[str]:
    """The latest `cpo loop` record of each task (bench/run_loop_tasks.sh)."""
    out = ["## `cpo loop` on a real LLM, one record per task", "",
           "SmolLM2-135M-Instruct (llama.cpp, greedy), 60 training queries x 6 seed prompts, fresh held-out queries "
           "verified sequentially (false promotions <= 0.05 over every candidate). Coverage: the share of verified "
           "prompts whose predicted 95% interval held the measured uplift (searched prompts: with the prompt-level "
           "error); allowing for the measurement's error: |predicted - measured| <= 1.96 sqrt(se_pred^2 + se_meas^2), "
           "95% when the intervals are exact.", "",
           "| task (record) | promoted vs the incumbent (best seed) | smallest uplift the budget detects | LLM calls | "
           "coverage, searched | coverage, all verified | all verified, allowing for the measurement's error |",
           "|---|---|---|---|---|---|---|"]
    for path in paths:
        d = json.loads(path.read_text())
        for o in d["outcome"]:
            pr, seq = o.get("promoted"), (o.get("promoted") or {}).get("sequential") or {}
            won = ("nothing" if not pr else f"{pr['text']!r}: {seq.get('mean_uplift', float('nan')):+.3f}, "
                   f"confidence sequence {seq.get('cs_low', float('nan')):+.3f} to {seq.get('cs_high', float('nan')):+.3f}"
                   f" after {seq.get('queries')} queries")
            sc, cal = o.get("searched_coverage") or {}, o.get("calibration") or {}
            out.append(f"| {d['task']['name'] if isinstance(d['task'], dict) else d['task']} round {o['round']} (`{path.name}`) | {won} | "
                       f"{(o.get('power') or {}).get('detectable_uplift', float('nan')):.3f} | "
                       f"{o.get('sequential_calls')} of {o.get('sequential_budget_calls')} | "
                       f"{sc.get('covered')} of {sc.get('prompts')} | "
                       f"{round(cal.get('interval_coverage', float('nan')) * (cal.get('n_prompts') or 0))} of {cal.get('n_prompts')} | "
                       + (f"{round(cal['interval_coverage_with_measurement_error'] * cal['n_prompts'])} of "
                          f"{cal['n_prompts']} |" if cal.get("interval_coverage_with_measurement_error") is not None
                          else "n/a |"))
    return out + [""]


def _section(title: str, intro: str, header: list[str], rows: list[list[str]]) -> list[str]:
    """A titled markdown table: a heading, a paragraph, the header and one line per row."""
    return [f"## {title}", "", intro, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows), ""]


def cs_replay(path: Path) -> list[str]:
    d = json.loads(path.read_text())
    rows = []
    for r in d["rounds"]:
        rnd = r.get("new_random_order") or {}
        rows.append([f"`{r['verify_dir']}`", f"{r['queries']} x {r['candidates']}",
                     f"{r['old']['detectable']:.3f} -> {r['new']['detectable']:.3f}", f"{r['old']['calls']} -> {r['new']['calls']}",
                     ", ".join(r["old"]["promoted"]) or "-", ", ".join(r["new"]["promoted"]) or "-",
                     f"{', '.join(rnd.get('promoted') or []) or '-'} ({rnd.get('cells_never_run')} cells never run)"])
    return _section(f"Sequential verifications replayed with the betting confidence sequence (`{path.relative_to(ROOT)}`)",
                    f"`bench/cs_replay.py` on each finished loop's stored rows (no LLM call): the rule of `{d['old_rev']}` "
                    "(empirical-Bernstein CS) against this checkout's (hedged betting CS), same alpha, budget and batch.",
                    ["verification", "queries x candidates", "detectable uplift, old -> new", "calls, old -> new",
                     "promoted, old", "promoted, new", "promoted, new rule in the stage's random query order"], rows)


def loop_confirm(path: Path) -> list[str]:
    d = json.loads(path.read_text())
    rows = [[f"`{r['loop']}` round {r['round']}", f"{r['promoted']['text']!r} ({r['rule']}): {r['promoted_mean']:.3f}",
             f"{r['incumbent']['text']!r}: {r['incumbent_mean']:.3f}", str(r["n_fresh"]),
             f"{r['promoted_vs_incumbent']['diff']:+.3f} ({r['promoted_vs_incumbent']['t_ci'][0]:+.3f} to "
             f"{r['promoted_vs_incumbent']['t_ci'][1]:+.3f})"] for r in d["results"]]
    return _section(f"Promoted prompts re-measured on queries the loop never saw (`{path.relative_to(ROOT)}`)",
                    f"`{d['command']}`; {d['model']}; load {' '.join(d['loadavg_start'])} at start. Paired 95% t "
                    "interval." + (f" {d['note']}" if d.get("note") else ""),
                    ["loop, round", "promoted (rule)", "incumbent", "fresh queries", "promoted - incumbent"], rows)


def vs_dspy(path: Path) -> list[str]:
    d = json.loads(path.read_text())
    out = [f"## `cpo loop` vs DSPy on the same fresh queries (`{path.relative_to(ROOT)}`)", "",
           f"{d.get('model', '')}; load average at the last save {d.get('loadavg_at_save', '')}. LLM calls counted at "
           "the server; paired differences per test query against the best seed, 95% t intervals.", ""]
    for task, t in d["tasks"].items():
        out += [f"**{task}** (grader `{t.get('grader')}`)", "", "| method | test mean | LLM calls | vs best seed |",
                "|---|---|---|---|"]
        for name, m in t["methods"].items():
            if "test_mean" not in m:
                out.append(f"| {name} | failed: {' '.join(str(m.get('error')).split())[:100]} | {m.get('llm_calls', '')} | |")
                continue
            v = m.get("vs_best_seed") or {}
            ci = v.get("t_ci") or [float("nan")] * 2
            out.append(f"| {name} | {m['test_mean']:.3f} | {m.get('llm_calls')} | {v.get('diff', float('nan')):+.3f} "
                       f"({ci[0]:+.3f} to {ci[1]:+.3f}) |")
        out.append("")
    return out


def main() -> int:
    parts = ["# Benchmarks", "", "Generated by `python scripts/benchmarks_md.py` from the records in `bench/results/`; "
             "every number below is read from a record of a run (device, command, load average inside).", ""]
    for pattern, fn in (("observational_*.json", observational), ("policy_observational_*.json", policy),
                        ("bench_calibration.json", calibration),
                        ("check_latest_*.json", check_latest), ("fresh_clone_2*.json", fresh_clone),
                        ("new_prompt_coverage_*.json", new_prompt_coverage)):
        p = latest(pattern)
        if p is not None:
            parts += fn(p)
    tasks = {}
    for p in sorted(RESULTS.glob("loop_smollm2_*_2*.json")):  # the latest record of each task
        tasks[p.name.rsplit("_", 1)[0]] = p
    if tasks:
        parts += loop_tasks(list(tasks.values()))
    p = latest("loop_coverage_*.json")
    if p is not None:
        parts += loop_coverage(p)
    for pattern, fn in (("cs_replay_*.json", cs_replay), ("loop_confirm_*.json", loop_confirm)):
        p = latest(pattern)
        if p is not None:
            parts += fn(p)
    p = latest("vs_dspy_*.json")
    if p is not None:
        parts += vs_dspy(p)
    out = ROOT / "docs" / "benchmarks.md"
    out.write_text("\n".join(parts).rstrip() + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
