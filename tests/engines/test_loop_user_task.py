"""`cpo loop` on a task defined only by files written here (not a built-in task): one-word sentiment
labels graded by a regex, the user's seed prompts, through the local llama.cpp server running
SmolLM2-135M-Instruct, with a call budget it stops at and resumes past. Assertions hold for any output
of the model: the report's shape, the verified rows, the call counts against the printed budget."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from cpo_engine.generation import read_generated
from tests.test_object_store import BUCKET, s3  # noqa: F401 (s3: the module-scoped moto S3 server)

pytestmark = [pytest.mark.engine, pytest.mark.slow]

GOOD = ["I loved this film", "A wonderful, warm story", "The best meal I have had in years", "Great value, works well",
        "Friendly staff and a lovely room", "An excellent book", "I would buy it again", "Brilliant acting",
        "A delightful evening", "Fast delivery and a perfect fit"]
BAD = ["I hated this film", "A dull, cold story", "The worst meal I have had in years", "Poor value, broke at once",
       "Rude staff and a dirty room", "A terrible book", "I want my money back", "Wooden acting",
       "A miserable evening", "Slow delivery and it does not fit"]
N_TRAIN, N_VERIFY, N_PROMPTS, TOP_K = 14, 4, 4, 1
MAX = N_TRAIN * N_PROMPTS + N_VERIFY * (N_PROMPTS + TOP_K)  # the most calls: seeds on training, arms on verify


def _task(folder):
    rows = [(f"rev-{i}", f'Review: "{t}." Is this review positive or negative?', label)
            for i, (t, label) in enumerate([(g, "positive") for g in GOOD] + [(b, "negative") for b in BAD])]
    queries = folder / "reviews.jsonl"
    queries.write_text("".join(json.dumps({"query_id": q, "query_text": t, "gold_answer": g}) + "\n"
                               for q, t, g in rows))
    prompts = folder / "prompts.csv"
    prompts.write_text("prompt_id,prompt_text\n"
                       "terse,Answer with one word: positive or negative.\n"
                       "label,Classify the sentiment of the review.\n"
                       "assistant,You are a helpful assistant.\n"
                       'think,"Read the review, then say whether it is positive or negative."\n')
    return queries, prompts


@pytest.mark.timeout(900)
def test_loop_on_a_user_task_from_files_with_a_call_budget(llama_server, tmp_path, capsys):
    from cpo_engine.cli import main

    queries, prompts = _task(tmp_path)
    out = tmp_path / "loop"
    argv = ["loop", "--queries", str(queries), "--grader", r"regex:\b(positive|negative)\b", "--prompts", str(prompts),
            "--endpoint", llama_server, "--out", str(out), "--train-queries", str(N_TRAIN),
            "--verify-queries", str(N_VERIFY), "--rounds", "1", "--max-tokens", "6", "--top-k", str(TOP_K),
            "--set", "pca.query_components=4", "--set", "embed.device=cpu",
            "--set", "beam.rounds=1", "--set", "beam.beam_width=3", "--set", "beam.children_per_beam=4"]

    # 1. a budget below the training step: it stops there, with the calls made committed
    assert main([*argv, "--max-calls", "20"]) == 3
    printed = capsys.readouterr()
    assert f"LLM budget: at most {MAX} calls ({N_TRAIN * N_PROMPTS} for the training triplets" in printed.out
    assert "stopped at the budget of 20 LLM calls" in printed.err
    assert read_generated(out / "generate").num_rows == 20
    assert not (out / "loop_report.json").exists()

    # 2. the printed maximum as the budget: it resumes (no call made twice) and finishes
    assert main([*argv, "--max-calls", str(MAX)]) == 0
    printed = capsys.readouterr().out
    assert "20 rows already committed" in printed and f"{N_TRAIN * N_PROMPTS - 20} to generate" in printed
    report = json.loads((out / "loop_report.json").read_text())
    assert report["task"]["name"] == "reviews" and report["task"]["queries"] == str(queries)
    assert report["grader"] == r"regex:\b(positive|negative)\b"
    assert report["budget"]["max_llm_calls"] == MAX and report["budget"]["max_calls"] == MAX
    v = report["rounds"][0]["verification"]
    n_arms = len(v["arms"])
    assert N_PROMPTS <= n_arms <= N_PROMPTS + TOP_K
    assert v["budget"]["calls"] == N_VERIFY * n_arms
    assert report["budget"]["llm_calls"] <= N_TRAIN * N_PROMPTS + v["budget"]["calls"] <= MAX
    assert {s["id"] for s in report["seeds"]} == {"terse", "label", "assistant", "think"}
    assert all(0 <= s["train_mean"] <= 1 for s in report["seeds"])
    assert report["outcome"][0]["verdict"] in ("win", "tie", "loss", "no searched prompt was verified")
    assert (out / "loop_report.md").read_text().startswith("# CPO loop on a real LLM")
    assert "Task `reviews` (grader `regex:" in (out / "loop_report.md").read_text()

    # the verified rows: fresh queries of the file, graded 0/1 against their labels
    rows = pq.read_table(out / "round-0" / "verify" / "verified_triplets.parquet")
    assert rows.num_rows == N_VERIFY * n_arms - v["generation"]["errors_total"]
    train_ids = set(pq.read_table(out / "data" / "train_queries.parquet")["query_id"].to_pylist())
    verify_ids = set(rows["query_id"].to_pylist())
    assert len(verify_ids) == N_VERIFY and not verify_ids & train_ids
    assert verify_ids <= {f"rev-{i}" for i in range(len(GOOD) + len(BAD))}
    assert set(rows["gold_answer"].to_pylist()) <= {"positive", "negative"}
    assert set(rows["score"].to_pylist()) <= {0.0, 1.0}

    # 3. a rerun makes no LLM call and gives the same outcome
    assert main([*argv, "--max-calls", str(MAX)]) == 0
    printed = capsys.readouterr().out
    assert f"{N_TRAIN * N_PROMPTS} rows already committed" in printed and "0 to generate" in printed
    assert json.loads((out / "loop_report.json").read_text())["outcome"] == report["outcome"]


@pytest.mark.timeout(900)
def test_loop_writes_its_folder_to_s3(llama_server, s3, tmp_path, capsys):  # noqa: F811 (the imported fixture)
    """`cpo loop --out s3://...`: run in a local staging folder, uploaded when it finishes (manifest last)."""
    from cpo_engine.cli import main

    queries, prompts = _task(tmp_path)
    uri = f"s3://{BUCKET}/loops/reviews"
    assert main(["--quiet", "loop", "--queries", str(queries), "--grader", r"regex:\b(positive|negative)\b",
                 "--prompts", str(prompts), "--endpoint", llama_server, "--out", uri, "--train-queries", str(N_TRAIN),
                 "--verify-queries", str(N_VERIFY), "--rounds", "1", "--max-tokens", "6", "--top-k", str(TOP_K),
                 "--set", "pca.query_components=4", "--set", "embed.device=cpu", "--set", "beam.rounds=1",
                 "--set", "beam.beam_width=3", "--set", "beam.children_per_beam=4"]) == 0
    fs = s3["fs"]
    manifest = json.loads(fs.open_input_stream(f"{BUCKET}/loops/reviews/manifest.json").read())
    assert manifest["status"] == "ok" and manifest["uploaded_to"] == uri
    report = json.loads(fs.open_input_stream(f"{BUCKET}/loops/reviews/loop_report.json").read())
    assert report["task"]["name"] == "reviews" and len(report["rounds"]) == 1
