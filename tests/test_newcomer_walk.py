"""A newcomer's walk end to end (issue 23, "Done when"), through the CLI as a user would do it: their own chat
logs (one JSON record per conversation: the system prompt, the user turn, the answer, a thumbs field named
`helpful`, their own names for the prompt variant and the logged propensity) on s3:// (a real moto S3 server),
`cpo validate` and `cpo run` on them with `--columns`/`--score-field`, the nightly entrypoint submitted twice
through the Ray Jobs API to a local Ray head (day 1 observational, day 2 a grid where plain is clearly best:
tests/nightly_logs.py), then `cpo assign --model STATE` on new queries from s3:// with the output on s3://.

One moto server and one Ray head serve the module; the moto fixture is set up first, so the Ray head (and the
jobs it runs) inherit the S3 endpoint and credentials from the environment, as a cluster's pods would."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.nightly_logs import new_queries, write_two_days
from tests.test_generation_ray_job import ray_head  # noqa: F401 (module-scoped local Ray head)
from tests.test_nightly_ray_job import _run_job
from tests.test_object_store import BUCKET, _cpo, s3  # noqa: F401 (module-scoped moto S3 server)

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SCORE_FIELD = "helpful"  # not one of the names read by default: --score-field is needed
DAY1_COLUMNS = "bot_variant=prompt_id,p_shown=propensity"  # day 1 came from a router that logged its odds
DAY2_COLUMNS = "bot_variant=prompt_id"  # day 2 is an offline grid: every variant on every query


def _chat_records(triplets: Path, propensity: bool) -> list[dict]:
    """The triplet rows of ``triplets`` as a chat logger writes them: no query id (derived from the text)."""
    t = pq.read_table(triplets).to_pandas()
    records = []
    for i, r in enumerate(t.itertuples(index=False)):
        record = {"session": f"s{i:05d}", "bot_variant": r.prompt_id,
                  "messages": [{"role": "system", "content": r.prompt_text},
                               {"role": "user", "content": r.query_text},
                               {"role": "assistant", "content": str(r.gold_answer) if r.score else "I am not sure."}],
                  SCORE_FIELD: "up" if r.score else "down"}
        if propensity:
            record["p_shown"] = float(r.propensity)
        records.append(record)
    return records


def _put_jsonl(fs, key: str, records: list[dict]) -> str:
    with fs.open_output_stream(f"{BUCKET}/{key}") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records).encode())
    return f"s3://{BUCKET}/{key}"


@pytest.fixture(scope="module")
def walk(s3, ray_head):  # noqa: F811 (s3 first: the Ray head inherits its environment)
    return s3, ray_head


@pytest.mark.timeout(600)
def test_chat_logs_on_s3_to_run_to_two_nights_on_ray_to_assign_from_the_live_state(walk, tmp_path):
    from ray.job_submission import JobSubmissionClient

    store, (address, _) = walk
    fs, env = store["fs"], store["env"]
    day1, day2 = write_two_days(tmp_path / "logs")
    uris = {}
    for name, path, propensity in (("day1", day1, True), ("day2", day2, False)):
        uris[name] = _put_jsonl(fs, f"walk/logs/{name}.jsonl", _chat_records(path, propensity))
    rows1 = pq.read_metadata(day1).num_rows

    # validate: the names map, the thumbs read as scores, ids derived from the texts
    done = _cpo("validate", uris["day1"], "--columns", DAY1_COLUMNS, "--score-field", SCORE_FIELD, "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rows"] == rows1
    missing = _cpo("validate", uris["day1"], "--columns", DAY1_COLUMNS, env=env)  # `helpful` is not a default name
    assert missing.returncode == 2 and "--score-field" in missing.stderr

    # run on day 1 (fast settings), the run folder on s3
    state, cache = tmp_path / "state", tmp_path / "state" / "cache"
    run_uri = f"s3://{BUCKET}/walk/runs/first"
    done = _cpo("--quiet", "run", "--data", uris["day1"], "--columns", DAY1_COLUMNS, "--score-field", SCORE_FIELD,
                "--out", run_uri, "--proposer", "none", "--cv", "3", "--set", "embed.device=cpu",
                "--set", f"embed.cache_dir={cache}", env=env)
    assert done.returncode == 0, done.stderr
    manifest = json.loads(fs.open_input_stream(f"{BUCKET}/walk/runs/first/manifest.json").read())
    assert manifest["status"] == "ok" and manifest["data"]["rows"] == rows1
    assert manifest["config"]["data"]["score_field"] == SCORE_FIELD
    assert fs.get_file_info(f"{BUCKET}/walk/runs/first/report.html").size > 0

    # two nights through the Ray Jobs API, reading the logs from s3
    client = JobSubmissionClient(address)
    for name, columns, date in (("day1", DAY1_COLUMNS, "2026-01-01"), ("day2", DAY2_COLUMNS, "2026-01-02")):
        logs = _run_job(client, f"python -m jobs.nightly --state {state} --new {uris[name]} --columns {columns} "
                                f"--score-field {SCORE_FIELD} --date {date} --cv 3 --proposer none "
                                "--set embed.device=cpu --set promote.holdout_share=0.5", 200)
        assert f"nightly {date}:" in logs and "live prompt/policy:" in logs
        report = json.loads((state / "runs" / date / "report.json").read_text())
        assert report["model_status"] == "updated" and report["held_out"]["skipped"] is None
    night2 = report["promotion"]
    assert night2["status"] == "promoted", night2["reason"]
    live = json.loads((state / "live.json").read_text())
    assert live["run"] == "runs/2026-01-02" and live["id"] == "plain"  # the user's own variant name, mapped
    assert live["evidence"]["estimator"] == "held_out" and live["evidence"]["difference"]["ci_low"] > 0

    # assign new queries (the user's column name, no ids) from s3 to s3, from the live state
    queries = pq.read_table(new_queries(tmp_path)).to_pandas()
    queries_uri = _put_jsonl(fs, "walk/new_queries.jsonl", [{"question": q} for q in queries["query_text"]])
    out_key = "walk/out/assignments.parquet"
    done = _cpo("--quiet", "assign", "--model", str(state), "--queries", queries_uri, "--columns",
                "question=query_text", "--out", f"s3://{BUCKET}/{out_key}", "--set", "embed.device=cpu",
                "--set", f"embed.cache_dir={cache}", env=env)
    assert done.returncode == 0, done.stderr
    got = pq.read_table(f"{BUCKET}/{out_key}", filesystem=fs)
    assert got.num_rows == len(queries)
    import pyarrow as pa

    from cpo_engine.data.columns import derived_ids

    expected = derived_ids(pa.array(queries["query_text"].tolist()), "q-").to_pylist()  # ids from the texts
    assert sorted(got.column("query_id").to_pylist()) == sorted(expected)
    assert set(got.column("recommended_prompt_id").to_pylist()) == {live["id"]}
