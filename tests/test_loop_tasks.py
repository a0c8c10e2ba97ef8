"""The loop's task (built-in or the user's --queries table), its grader specs, its refusals and its
printed budget, with no LLM (the loop itself runs against a real LLM in tests/engines/test_verify_engines.py
and tests/engines/test_loop_user_task.py)."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from cpo_engine.exceptions import ConfigError
from cpo_engine.generation.graders import get_grader
from cpo_engine.generation.local_server import LocalServerConfig
from cpo_engine.generation.tasks import TaskConfig, addition_pool, draw_queries, write_task


def test_addition_queries_are_distinct_with_correct_gold_answers():
    pool = addition_pool()
    assert len(pool) == len({q for q, _, _ in pool}) == len({t for _, t, _ in pool}) == 324
    grader = get_grader("numeric")
    for qid, text, gold in pool:
        a, b = map(int, qid.split("-")[1:3])
        assert str(a) in text and str(b) in text and gold == str(a + b)
        assert grader.grade(f"The answer is {a + b}.", gold) == 1.0


def test_training_and_verification_queries_never_overlap_and_are_reproducible(tmp_path):
    cfg = TaskConfig(n_train=60, n_verify=40, seed=3)
    train, verify = draw_queries(cfg, rounds=3)
    sets = [set(train["query_text"].to_pylist())] + [set(v["query_text"].to_pylist()) for v in verify]
    assert [len(s) for s in sets] == [60, 40, 40, 40] and len(set().union(*sets)) == 180
    again, verify1 = draw_queries(cfg, rounds=1)  # more rounds never change earlier blocks
    assert again.equals(train) and verify1[0].equals(verify[0])
    paths = write_task(cfg, tmp_path, rounds=1)
    assert pq.read_table(paths["prompts"]).num_rows == 6 and pq.read_table(paths["verify_0"]).num_rows == 40
    with pytest.raises(ConfigError, match="324 queries"):
        draw_queries(TaskConfig(n_train=300, n_verify=40), rounds=1)


def test_bad_loop_settings_are_config_errors(capsys):
    from cpo_engine.cli import main

    with pytest.raises(ConfigError):
        TaskConfig(kind="sentiments")
    with pytest.raises(ConfigError):
        LocalServerConfig(threads=0)
    assert main(["loop", "--task", "nope", "--out", "unused"]) == 2
    assert "task.kind 'nope' is not a task" in capsys.readouterr().err


# ------------------------------------------------------------------ the loop on the user's own task


def _write_queries(path, n, gold="gold_answer"):
    import pyarrow as pa

    table = pa.table({"query_id": [f"r{i}" for i in range(n)],
                      "query_text": [f"Review {i}: {'loved it' if i % 2 else 'hated it'}. Positive or negative?"
                                     for i in range(n)],
                      gold: ["positive" if i % 2 else "negative" for i in range(n)]})
    if path.suffix == ".csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, path)
    elif path.suffix == ".jsonl":
        import json

        path.write_text("".join(json.dumps(r) + "\n" for r in table.to_pylist()))
    else:
        pq.write_table(table, path)
    return path


_DEAD = ["--endpoint", "http://127.0.0.1:9/v1"]  # nothing listens there: a refusal must come first


def test_user_task_tables_read_alike_in_every_format_and_built_in_tasks_are_such_files(tmp_path):
    from cpo_engine.generation.tasks import builtin_table, read_task, write_example

    tables = [read_task(_write_queries(tmp_path / f"reviews.{ext}", 10)) for ext in ("csv", "jsonl", "parquet")]
    assert tables[0].equals(tables[1]) and tables[0].equals(tables[2])
    assert tables[0].column_names == ["query_id", "query_text", "gold_answer", "task"]
    assert set(tables[0]["task"].to_pylist()) == {"reviews"}
    # the built-in task is a file of the same interface: written, read back and drawn like a user's
    csv = write_example("addition", tmp_path / "addition.csv")
    assert read_task(csv).select(["query_id", "query_text", "gold_answer"]).equals(
        builtin_table("addition").select(["query_id", "query_text", "gold_answer"]))
    user = TaskConfig(queries=str(csv), n_train=60, n_verify=40, seed=3)
    assert draw_queries(user, rounds=2)[0]["query_id"].equals(
        draw_queries(TaskConfig(seed=3, n_verify=40), rounds=2)[0]["query_id"])
    assert user.name == "addition"


def test_grader_specs_of_the_loop(tmp_path, monkeypatch):
    from cpo_engine.generation.graders import FunctionGrader, MultipleChoiceGrader

    assert isinstance(get_grader("choice"), MultipleChoiceGrader) and get_grader("choice:ABCD").letters == "ABCD"
    (tmp_path / "mygrader.py").write_text("def first_word(text, gold):\n"
                                          "    return text.split()[0].strip(',.').lower() == gold\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    g = get_grader("mygrader:first_word")
    assert isinstance(g, FunctionGrader) and g.grade("Positive, clearly", "positive") == 1.0
    with pytest.raises(ConfigError, match="unknown grader"):
        get_grader("sentiment")


@pytest.mark.parametrize("case", ["too_few", "bad_grader", "no_gold", "alias", "few_train"])
def test_loop_refuses_a_bad_task_before_any_llm_call(case, tmp_path, capsys):
    from cpo_engine.cli import main

    q = _write_queries(tmp_path / "reviews.csv", 20, gold="label" if case in ("no_gold",) else "gold_answer")
    if case == "alias":
        q.write_text(q.read_text().replace("query_text", "question", 1))
    args = {"too_few": ["--grader", "exact"],  # default 60 + 200 queries
            "bad_grader": ["--grader", "sentiment", "--train-queries", "14", "--verify-queries", "4"],
            "no_gold": ["--grader", "exact", "--train-queries", "14", "--verify-queries", "4"],
            "alias": ["--grader", "exact", "--train-queries", "14", "--verify-queries", "4"],
            "few_train": ["--grader", "exact", "--train-queries", "8", "--verify-queries", "4"]}[case]
    out = tmp_path / "loop"
    assert main(["loop", "--queries", str(q), "--out", str(out), *_DEAD, *args]) == 2
    printed = capsys.readouterr()
    assert "LLM budget" not in printed.out and not (out / "generate").exists()
    expected = {"too_few": "has 20 queries; 60 training + 1 x 200 verification queries need 260",
                "bad_grader": "unknown grader 'sentiment'",
                "no_gold": "no gold answer column 'gold_answer'",
                "alias": "did you mean 'question'? rename it to 'query_text'",
                "few_train": "pass --train-queries 13 or more (the queries table then needs 17 queries"}[case]
    assert expected in printed.err
    if case == "no_gold":  # the gold column under another name
        rc = main(["loop", "--queries", str(q), "--out", str(out), *_DEAD, *args, "--gold-column", "label",
                   "--max-calls", "0"])
        assert rc == 3 and "LLM budget: at most" in capsys.readouterr().out


def test_loop_prints_its_budget_and_stops_at_max_calls_before_any_call(tmp_path, capsys):
    from cpo_engine.cli import main

    q = _write_queries(tmp_path / "reviews.jsonl", 18)
    out = tmp_path / "loop"
    rc = main(["loop", "--queries", str(q), "--grader", r"regex:\b(positive|negative)\b", "--out", str(out), *_DEAD,
               "--train-queries", "14", "--verify-queries", "4", "--max-tokens", "4", "--max-calls", "0"])
    printed = capsys.readouterr()
    assert rc == 3
    # 14 x 6 generic seed prompts, then 4 queries x (6 seeds + 3 searched) to verify
    assert "LLM budget: at most 120 calls (84 for the training triplets" in printed.out
    assert "at most 480 generated tokens (4 a call)" in printed.out
    assert "stopped at the budget of 0 LLM calls" in printed.err and "rerun the same command" in printed.err
    train = pq.read_table(out / "data" / "train_queries.parquet")
    verify = pq.read_table(out / "data" / "verify_queries_0.parquet")
    assert train.num_rows == 14 and verify.num_rows == 4
    assert not set(train["query_id"].to_pylist()) & set(verify["query_id"].to_pylist())
    assert pq.read_table(out / "data" / "seed_prompts.parquet").num_rows == 6


def test_the_numeric_example_file_serves_its_documented_command(tmp_path, capsys):
    """examples/loop/numbers.csv (docs/generation.md): numeric gold answers, enough queries for the command."""
    from pathlib import Path

    from cpo_engine.cli import main
    from cpo_engine.generation.tasks import read_task

    example = Path(__file__).resolve().parents[1] / "examples" / "loop" / "numbers.csv"
    table = read_task(example)
    grader = get_grader("numeric")
    assert table.num_rows == 120 and all(grader.grade(f"The answer is {g}.", g) == 1.0 for g in table["gold_answer"].to_pylist())
    rc = main(["loop", "--queries", str(example), "--grader", "numeric", "--out", str(tmp_path / "loop"),
               "--train-queries", "20", "--verify-queries", "12", *_DEAD, "--max-calls", "0"])
    assert rc == 3 and "LLM budget: at most 228 calls (120 for the training triplets" in capsys.readouterr().out


# ------------------------------------------------------------------ the built-in tasks beyond addition


def test_built_in_task_pools_are_distinct_hold_two_powered_rounds_and_have_right_gold_answers():
    import re

    from cpo_engine.generation.tasks import (SEED_PROMPTS, SENTIMENT_WORDS, TASK_GRADERS, TASKS, comparison_pool,
                                             sentiment_pool)

    assert set(TASKS) == set(SEED_PROMPTS) == set(TASK_GRADERS) == {"addition", "sentiment", "comparison", "mixed"}
    for name, pool_fn in TASKS.items():
        pool = pool_fn()
        assert pool == pool_fn()  # the same pool every call
        assert len(pool) == len({q for q, _, _ in pool}) == len({t for _, t, _ in pool})
        if name != "addition":  # 60 training + 2 rounds x 200 verification queries
            assert len(pool) >= TaskConfig().needed(rounds=2) == 460
        assert len(SEED_PROMPTS[name]) == 6
    polarity = {w: lab for lab, words in SENTIMENT_WORDS.items() for w in words}
    sentiment = sentiment_pool()
    assert {g for _, _, g in sentiment} == {"positive", "negative"}
    assert abs(sum(g == "positive" for _, _, g in sentiment) - len(sentiment) / 2) <= 1
    for qid, text, gold in sentiment:
        review = re.search(r'"(.*)"', text).group(1)
        words = [polarity[w] for w in re.findall(r"[a-z]+", review) if w in polarity]
        if qid.startswith("sent-negated"):
            assert " not " in review and words == [{"positive": "negative", "negative": "positive"}[gold]]
        elif qid.startswith("sent-contrast"):
            assert ", but " in review and words[-1] == gold and words[0] != gold
        else:
            assert words == [gold]
    for qid, text, gold in comparison_pool():
        a, b = map(int, qid.split("-")[1:3])
        assert a != b and f"{a}" in text and f"{b}" in text
        assert gold == str(max(a, b) if ("larger" in text) else min(a, b))
    mixed = TASKS["mixed"]()
    assert {q.split("-")[0] for q, _, _ in mixed} == {"add", "sent", "cmp"}


@pytest.mark.parametrize("task,right,wrong,gold", [
    ("sentiment", "The review is Positive.", "This is negative.", "positive"),
    ("comparison", "The larger number is 52.", "52 is larger than 47.", "52"),
    ("mixed", "Negative", "positive, not negative? No: positive", "negative"),
    ("mixed", "The answer is 12.", "It is 11", "12"),
])
def test_each_built_in_task_is_graded_by_its_own_grader_unless_one_is_given(task, right, wrong, gold):
    from cpo_engine.settings import LoopConfig
    from cpo_engine.workflows.loop import task_grader

    spec = task_grader(LoopConfig(task=TaskConfig(kind=task)))
    grader = get_grader(spec)
    assert grader.grade(right, gold) == 1.0 and grader.grade(wrong, gold) == 0.0
    cfg = LoopConfig(task=TaskConfig(kind=task))
    cfg.generation.grader = "exact"
    assert task_grader(cfg) == "exact"  # a grader the user names wins
    assert task_grader(LoopConfig(task=TaskConfig(kind="addition"))) == "numeric"


def test_the_loop_verifies_sequentially_on_200_queries_and_prints_its_power_first(tmp_path, capsys):
    from cpo_engine.cli import main
    from cpo_engine.settings import LoopConfig

    cfg = LoopConfig()
    assert cfg.verify.design == "sequential" and cfg.task.n_verify == 200 and cfg.verify.seeds == "all"
    out = tmp_path / "loop"
    rc = main(["loop", "--task", "sentiment", "--out", str(out), *_DEAD, "--max-calls", "0"])
    printed = capsys.readouterr()
    assert rc == 3
    # 60 x 6 seeds, then 200 queries x (6 seeds + 3 searched)
    assert "LLM budget: at most 2160 calls (360 for the training triplets" in printed.out
    assert ("verification (sequential, each round): with this budget (200 paired queries per candidate if none "
            "stops early, 8 candidate(s), false promotions <= 0.05 overall) you can detect an uplift of 0.143 or "
            "more") in printed.out
    assert pq.read_table(out / "data" / "verify_queries_0.parquet").num_rows == 200
    assert set(pq.read_table(out / "data" / "train_queries.parquet")["task"].to_pylist()) == {"sentiment"}
    config = (out / "loop_config.json").read_text()
    assert '"design": "sequential"' in config


def _verification(searched_pred, searched_meas, sequential=True):
    arms = [{"id": "inc", "text": "seed", "role": "incumbent", "uplift_vs_baseline": None, "predicted_uplift": None}]
    for i, ((lo, hi), m) in enumerate(zip(searched_pred, searched_meas)):
        arms.append({"id": f"s{i}", "text": f"searched {i}", "role": "searched",
                     "uplift_vs_baseline": {"value": m, "ci_low": m - 0.1, "ci_high": m + 0.1, "kind": "measured"},
                     "predicted_uplift": {"value": (lo + hi) / 2, "ci_low": lo, "ci_high": hi, "kind": "predicted",
                                          "method": "causal model + prompt-level error"}})
    v = {"arms": arms, "best_promotable": None}
    if sequential:
        v["sequential"] = {"calls": 900, "budget_calls": 2000, "power": {"statement": "you can detect an uplift of 0.181"},
                           "candidates": [{"id": "s0", "decision": "better", "stop_reason": "decided better",
                                           "queries": 120, "calls": 240, "mean_uplift": 0.2, "cs_low": 0.05,
                                           "cs_high": 0.35}]}
        v["best_promotable"] = arms[1] | {"kind": "static", "sequential": v["sequential"]["candidates"][0]}
    return v


def _render_one(v):
    from cpo_engine.workflows.loop import promotion, render_loop

    o = {"verdict": "no searched prompt was verified", **promotion(v, "s0")}
    report = {"task": {"kind": "addition", "n_train": 60, "n_verify": 200}, "budget": {
        "max_tokens": 16, "temperature": 0.0, "llm_calls": 1}, "seeds": [], "timings_s": {},
        "rounds": [{"round": 0, "training_rows": 1, "run": "r", "verification": v | {
            "policy": {"share_not_baseline": 0.0, "uplift_vs_baseline": None}, "calibration": {"n_prompts": 0},
            "arms": [a | {"value": None} for a in v["arms"]]}}], "outcome": [o]}
    return render_loop(report)


def test_the_loop_report_says_what_was_promoted_the_power_and_the_searched_prompts_coverage():
    from cpo_engine.workflows.loop import promotion, searched_coverage

    v = _verification([(0.0, 0.3), (-0.2, 0.0), (-0.1, 0.1)], [0.2, 0.1, 0.05])
    cov = searched_coverage(v)
    assert (cov["prompts"], cov["covered"]) == (3, 2) and cov["coverage"] == pytest.approx(2 / 3)
    assert cov["interval_methods"] == ["causal model + prompt-level error"]
    p = promotion(v, "s0")
    assert p["promoted"]["id"] == "s0" and p["promoted"]["role"] == "searched"
    assert p["promoted"]["sequential"]["cs_low"] == 0.05  # promoted by its confidence sequence, which the report shows
    assert "confidence sequence +0.050 to +0.350 (fixed-n 95% CI" in _render_one(v)
    assert p["power"]["statement"].endswith("0.181") and p["top_searched_sequential"]["decision"] == "better"
    assert (p["sequential_calls"], p["sequential_budget_calls"]) == (900, 2000)
    fixed = promotion(_verification([(0.0, 0.3)], [0.2], sequential=False), "s0")
    assert fixed == {"promoted": None}


def test_the_champion_changes_only_on_a_measured_promotion_and_is_what_the_loop_recommends():
    """Round 0 measures against the seed with the best training mean; a round's promoted prompt is the next
    round's incumbent; a promoted per-query policy (not a prompt) leaves it; the report's ``final`` is the last."""
    from cpo_engine.workflows.loop import final_prompt, next_incumbent

    seeds = [{"id": "seed1", "text": "best on training"}, {"id": "seed2", "text": "second"}]
    arm = lambda i, t: {"id": i, "text": t, "role": "searched"}  # noqa: E731
    none = {"arms": [arm("seed1", "best on training"), arm("s0", "searched 0")], "best_promotable": None}
    won = {"arms": [arm("seed1", "best on training"), arm("s0", "searched 0")],
           "best_promotable": arm("s0", "searched 0") | {"kind": "static"}}
    policy = {"arms": [arm("s0", "searched 0")], "best_promotable": {"id": "per-query policy", "kind": "per_query"}}
    assert next_incumbent("seed1", none) == "seed1" and next_incumbent("seed1", won) == "s0"
    assert next_incumbent("s0", policy) == "s0"
    assert final_prompt(seeds, [{"round": 0, "incumbent": "seed1", "verification": none}]) == {
        "id": "seed1", "text": "best on training", "how": "the seed with the best training mean: nothing was shown better"}
    two = [{"round": 0, "incumbent": "seed1", "verification": won}, {"round": 1, "incumbent": "s0", "verification": policy}]
    assert final_prompt(seeds, two) == {"id": "s0", "text": "searched 0",
                                        "how": "promoted in round 0: measured better than the incumbent"}


@pytest.mark.timeout(60)
def test_requests_spread_over_several_endpoints_the_least_busy_first():
    """Two real HTTP servers on localhost (each answering one request at a time, like llama-cpp-python's):
    with base_urls the backend keeps both busy, so the batch takes about half the time of one server."""
    import json
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from cpo_engine.generation.backends.openai_http import OpenAIBackend, OpenAIConfig
    from cpo_engine.generation.types import GenerationRequest, RowKey, SamplingConfig

    class One(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            with self.server.lock:  # one request at a time
                time.sleep(0.1)
                self.server.hits += 1
            body = json.dumps({"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}],
                               "usage": {"prompt_tokens": 1, "completion_tokens": 1}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    servers = []
    for _ in range(2):
        srv = ThreadingHTTPServer(("127.0.0.1", 0), One)
        srv.lock, srv.hits = threading.Lock(), 0
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
    urls = [f"http://127.0.0.1:{s.server_address[1]}/v1" for s in servers]
    reqs = [GenerationRequest(key=RowKey("r", f"q{i}", "p", 0), sampling=SamplingConfig(max_tokens=2),
                              messages=({"role": "user", "content": "hi"},)) for i in range(16)]
    try:
        t0 = time.perf_counter()
        out = OpenAIBackend(OpenAIConfig(base_url=urls[0], max_concurrency=4)).generate(reqs)
        one = time.perf_counter() - t0
        assert all(o.error is None for o in out) and [s.hits for s in servers] == [16, 0]
        t0 = time.perf_counter()
        out = OpenAIBackend(OpenAIConfig(base_url=urls[0], base_urls=urls[1:], max_concurrency=4)).generate(reqs)
        two = time.perf_counter() - t0
        assert all(o.error is None and o.text == "ok" for o in out)
        assert [s.hits for s in servers] == [24, 8]  # 8 more each
        assert two < 0.75 * one
    finally:
        for s in servers:
            s.shutdown()


def test_the_local_server_starts_parallel_processes_with_their_threads():
    from cpo_engine.generation.local_server import LlamaCppServer

    cfg = LocalServerConfig(threads=1, parallel=2)
    cmd = LlamaCppServer(cfg).command(8123)
    assert cmd[cmd.index("--n_threads") + 1] == "1" and cmd[cmd.index("--n_threads_batch") + 1] == "1"
    with pytest.raises(ConfigError, match="server.parallel"):
        LocalServerConfig(parallel=0)
