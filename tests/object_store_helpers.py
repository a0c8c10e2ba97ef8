"""What the S3 and GCS tests share (tests/test_object_store.py on moto, tests/test_object_store_gcs.py on
gcp-storage-emulator): writing a table to the store, and the round trip a user makes on it (`cpo run` reading logs
from and writing its run folder to the store, then `cpo assign` with model, queries and output there), with the
check that no credential reaches any file or object."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq


def put(fs, scheme: str, bucket: str, key: str, table: pa.Table) -> str:
    """Write ``table`` to ``bucket/key`` (CSV for a .csv key, else Parquet); returns its URI."""
    with fs.open_output_stream(f"{bucket}/{key}") as f:
        if key.endswith(".csv"):
            pacsv.write_csv(table, f)
        else:
            pq.write_table(table, f)
    return f"{scheme}://{bucket}/{key}"


def run_and_assign_round_trip(fs, scheme: str, bucket: str, small_example: Path, tmp_path: Path, staging: Path,
                              secrets: list[bytes]) -> None:
    """`cpo run --data URI --out URI`, then `cpo assign --model URI --queries URI --columns ... --out URI`; checks
    the uploaded run (manifest ok, naming its URI and the data's hash), the assignment, and that none of
    ``secrets`` is in the staging folder, the cache or any object of the bucket."""
    import pyarrow.fs as pafs

    from cpo_engine.cli import main

    logs = pq.read_table(small_example)
    data = put(fs, scheme, bucket, "logs/logs.parquet", logs)
    queries = logs.group_by(["query_id", "query_text"]).aggregate([])
    queries_uri = put(fs, scheme, bucket, "new/queries.csv", queries.rename_columns(["qid", "question"]))
    cache = tmp_path / "cache"
    run_uri = f"{scheme}://{bucket}/runs/r1"
    assert main(["--quiet", "run", "--data", data, "--out", run_uri, "--proposer", "none",
                 "--set", f"embed.cache_dir={cache}", "--set", "embed.device=cpu"]) == 0
    manifest = json.loads(fs.open_input_stream(f"{bucket}/runs/r1/manifest.json").read())
    assert manifest["status"] == "ok" and manifest["uploaded_to"] == run_uri
    assert manifest["data"]["path"] == data and len(manifest["data"]["sha256"]) == 64
    for name in ("model/bundle.json", "model/policy.json", "report.html", "summary.json"):
        assert fs.get_file_info(f"{bucket}/runs/r1/{name}").size > 0, name
    out_uri = f"{scheme}://{bucket}/out/assignment.parquet"
    assert main(["--quiet", "assign", "--model", run_uri, "--queries", queries_uri, "--columns",
                 "qid=query_id,question=query_text", "--out", out_uri,
                 "--set", f"embed.cache_dir={cache}", "--set", "embed.device=cpu"]) == 0
    got = pq.read_table(f"{bucket}/out/assignment.parquet", filesystem=fs)
    assert sorted(got.column("query_id").to_pylist()) == sorted(queries.column("query_id").to_pylist())
    # no credential in any file written: the run's local copy, the cache, and every object in the bucket
    written = [p.read_bytes() for root in (staging, tmp_path) for p in root.rglob("*") if p.is_file()]
    objects = [f for f in fs.get_file_info(pafs.FileSelector(bucket, recursive=True)) if f.type == pafs.FileType.File]
    written += [fs.open_input_stream(f.path).read() for f in objects]
    assert len(written) > 10
    for blob in written:
        for secret in secrets:
            assert secret not in blob


@contextlib.contextmanager
def store_server(argv: list[str], port: int, log: Path, env: dict[str, str], what: str,
                 ready: Callable[[], bool] = lambda: True, timeout_s: float = 60) -> Iterator[None]:
    """A local object-store API server (moto, gcp-storage-emulator) started from ``argv``, its output in ``log``,
    with ``env`` set in this process while it runs: up once its port accepts a connection and ``ready()`` holds,
    a test failure (with the log's tail) when it exits or is not up in ``timeout_s``; stopped, and the environment
    restored, on exit."""
    import pytest

    with open(log, "wb") as f:
        proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        deadline = time.time() + timeout_s
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                if ready():
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"{what} did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
