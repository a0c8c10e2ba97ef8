"""s3:// end to end against a real S3 API server on localhost (moto's server mode, from .venv-s3): validate, run
and assign read logs, queries and a model from a bucket and write their run folder and output there, with the
credentials in the environment only (none of them lands in any file written)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cpo_engine.generation.local_server import free_port
from tests.object_store_helpers import put, run_and_assign_round_trip, store_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[1]
MOTO_PY = ROOT / ".venv-s3" / "bin" / "python"
KEY_ID, SECRET = "AKIACPOTESTKEY0001", "cpo-test-secret-Zq81xV0pL4"  # fake, but must never reach a file
BUCKET = "cpo-logs"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on a free port, the AWS_* environment pointing at it, and one bucket."""
    if not MOTO_PY.exists():
        pytest.fail(f"{MOTO_PY} is missing: the object-store tests need moto's S3 server in .venv-s3; "
                    "run scripts/install_engines.sh (it installs requirements/s3-server.lock there)")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    env = {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_EC2_METADATA_DISABLED": "true",
           "CPO_STAGING_DIR": str(tmp_path_factory.mktemp("staging"))}
    argv = [str(MOTO_PY), "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with store_server(argv, port, log, env, "moto's S3 server"):
        import pyarrow.fs as pafs

        admin = pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http", region="us-east-1",
                                  allow_bucket_creation=True)
        admin.create_dir(BUCKET)
        yield {"fs": admin, "env": env, "port": port}


def _put(fs, key: str, table: pa.Table) -> str:
    return put(fs, "s3", BUCKET, key, table)


def _cpo(*argv: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cpo_engine.cli", *argv], capture_output=True, text=True,
                          env={**os.environ, **env}, cwd=ROOT, timeout=300)


def test_validate_reads_s3_files_and_folders_and_names_a_missing_uri(s3, small_example):
    table = pq.read_table(small_example)
    uri = _put(s3["fs"], "v/logs.parquet", table)
    _put(s3["fs"], "v/shards/part-0.parquet", table.slice(0, 600))
    _put(s3["fs"], "v/shards/part-1.parquet", table.slice(600))
    done = _cpo("validate", uri, "--json", env=s3["env"])  # the real CLI, credentials from the environment only
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rows"] == table.num_rows
    from cpo_engine.data import read_triplets

    assert read_triplets(f"s3://{BUCKET}/v/shards/").num_rows == table.num_rows
    missing = _cpo("validate", f"s3://{BUCKET}/v/nothere.parquet", env=s3["env"])
    assert missing.returncode == 2 and f"s3://{BUCKET}/v/nothere.parquet" in missing.stderr
    assert "the path does not exist" in missing.stderr and "s3:/cpo" not in missing.stderr


def test_a_uri_with_credentials_in_it_is_refused(s3):
    from cpo_engine.data import read_triplets
    from cpo_engine.exceptions import ConfigError

    with pytest.raises(ConfigError, match="credentials in it") as e:
        read_triplets(f"s3://{KEY_ID}:{SECRET}@{BUCKET}/v/logs.parquet")
    assert SECRET not in str(e.value)


def test_run_and_assign_read_and_write_s3_and_write_no_secret(s3, small_example, tmp_path):
    run_and_assign_round_trip(s3["fs"], "s3", BUCKET, small_example, tmp_path, Path(s3["env"]["CPO_STAGING_DIR"]),
                              [SECRET.encode(), KEY_ID.encode()])


def test_chat_logs_with_their_own_names_on_s3_fit_to_s3(s3, tmp_path, capsys):
    """A newcomer's logs as they have them: chat-format JSONL on s3, a field renamed by --columns, fitted with the
    run folder on s3."""
    from cpo_engine.cli import main

    example = ROOT / "examples" / "chat" / "chat_logs.jsonl"
    with s3["fs"].open_output_stream(f"{BUCKET}/chat/logs.jsonl") as f:
        f.write(example.read_bytes())
    data = f"s3://{BUCKET}/chat/logs.jsonl"
    assert main(["validate", data, "--columns", "conversation_id=run_id", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 48
    assert main(["--quiet", "fit", "--data", data, "--columns", "conversation_id=run_id", "--out",
                 f"s3://{BUCKET}/fits/f1", "--cv", "2", "--set", "embed.device=cpu",
                 "--set", f"embed.cache_dir={tmp_path / 'cache'}"]) == 0
    manifest = json.loads(s3["fs"].open_input_stream(f"{BUCKET}/fits/f1/manifest.json").read())
    assert manifest["status"] == "ok" and manifest["data"]["rows"] == 48
    assert manifest["config"]["data"]["columns"] == {"conversation_id": "run_id"}
    assert s3["fs"].get_file_info(f"{BUCKET}/fits/f1/model/bundle.json").size > 0
    # the other commands that write a folder, their --out on s3 too (written locally, uploaded manifest last)
    cache = ["--columns", "conversation_id=run_id", "--set", "embed.device=cpu",
             "--set", f"embed.cache_dir={tmp_path / 'cache'}"]
    assert main(["--quiet", "ope", data, "--policy", "p-empty", "--out", f"s3://{BUCKET}/ope/o1", "--cv", "2",
                 *cache]) == 0  # p-empty: the id derived for the records without a system prompt
    assert main(["--quiet", "optimize", "--data", data, "--model", f"s3://{BUCKET}/fits/f1", "--mode", "pool",
                 "--out", f"s3://{BUCKET}/opt/o1", *cache]) == 0
    for folder, kind, name in (("ope/o1", "ope", "ope.json"), ("opt/o1", "optimize", "assignment.parquet")):
        manifest = json.loads(s3["fs"].open_input_stream(f"{BUCKET}/{folder}/manifest.json").read())
        assert manifest["kind"] == kind and manifest["uploaded_to"] == f"s3://{BUCKET}/{folder}"
        assert s3["fs"].get_file_info(f"{BUCKET}/{folder}/{name}").size > 0, (folder, name)


def test_a_missing_bucket_is_refused_before_any_work(s3, small_example, capsys):
    from cpo_engine.cli import main

    assert main(["--quiet", "run", "--data", str(small_example), "--out", "s3://no-such-bucket/r", "--proposer",
                 "none"]) == 2
    err = capsys.readouterr().err
    assert "bucket 'no-such-bucket' does not exist" in err and "AWS_ENDPOINT_URL" in err


def test_the_embedding_cache_on_s3_is_read_back_by_a_second_run(s3, small_example, tmp_path, capsys):
    """embed.cache_dir=s3://...: the first `cpo embed` writes its vectors as whole shard objects in the bucket, a
    second run (a new cache object, nothing in memory) reads them back from the store and embeds nothing, with no
    local cache folder involved."""
    import re

    import pyarrow.fs as pafs

    from cpo_engine.cli import main

    data = _put(s3["fs"], "cache-logs/logs.parquet", pq.read_table(small_example))
    cache = f"s3://{BUCKET}/cpo_cache"

    def embed(out: str) -> tuple[int, int]:
        assert main(["embed", "--data", data, "--out", str(tmp_path / out), "--set", f"embed.cache_dir={cache}",
                     "--set", "embed.device=cpu"]) == 0
        found = re.search(r"\(cache: ([\d,]+) hits, ([\d,]+) misses\)", capsys.readouterr().out)
        return int(found[1].replace(",", "")), int(found[2].replace(",", ""))

    first = embed("e1")
    assert first[0] == 0 and first[1] > 80  # 80 queries and 16 prompts, all new
    shards = [f for f in s3["fs"].get_file_info(pafs.FileSelector(f"{BUCKET}/cpo_cache", recursive=True))
              if f.type == pafs.FileType.File]
    assert shards and all(f.base_name.startswith("shard-") and f.base_name.endswith(".parquet") for f in shards)
    assert sum(pq.read_table(f.path, filesystem=s3["fs"]).num_rows for f in shards) == first[1]
    assert embed("e2") == (first[1], 0)  # every vector read back from the store
    assert not (ROOT / BUCKET).exists() and not any(tmp_path.rglob("shard-*"))


def test_generate_embed_and_edits_write_their_folders_to_s3(s3, small_example, tmp_path):
    """`--out s3://` for the commands that write a folder of their own: generated in a local staging folder, then
    uploaded with the manifest last (its status ok, the URI recorded, no credential in any object)."""
    import pyarrow.fs as pafs

    from cpo_engine.cli import main

    fs = s3["fs"]
    logs = pq.read_table(small_example)
    import pyarrow.compute as pc

    few = logs.filter(pc.is_in(logs.column("query_id"), logs.column("query_id").unique()[:6]))
    data = _put(fs, "logs/few.parquet", few)
    local = tmp_path / "few.parquet"
    pq.write_table(few, local)
    cache = tmp_path / "cache"
    outs = {"gen": ["generate", "--queries", str(local), "--backend", "replay", "--replay", str(local)],
            "features": ["embed", "--data", data, "--set", f"embed.cache_dir={cache}", "--set", "embed.device=cpu"],
            "edits": ["edits", "--data", data]}
    for name, argv in outs.items():
        uri = f"s3://{BUCKET}/outs/{name}"
        assert main(["--quiet", *argv, "--out", uri]) == 0, name
        manifest = json.loads(fs.open_input_stream(f"{BUCKET}/outs/{name}/manifest.json").read())
        assert manifest["uploaded_to"] == uri, name
        objects = [f for f in fs.get_file_info(pafs.FileSelector(f"{BUCKET}/outs/{name}", recursive=True))
                   if f.type == pafs.FileType.File]
        assert len(objects) >= 2, (name, [o.path for o in objects])
        for f in objects:
            blob = fs.open_input_stream(f.path).read()
            assert SECRET.encode() not in blob and KEY_ID.encode() not in blob
    shards = [f.path for f in fs.get_file_info(pafs.FileSelector(f"{BUCKET}/outs/gen", recursive=True))
              if f.path.endswith(".parquet")]
    assert shards and sum(pq.read_table(p, filesystem=fs).num_rows for p in shards) > 0


@pytest.mark.timeout(600)
def test_verify_a_run_folder_on_s3_in_place(s3, small_example, tmp_path, capsys):
    """`cpo verify s3://...`: the run is copied down, verified with the LLM (here the replay backend: recorded
    outcomes), and the verification uploaded beside it, the manifest last."""
    from cpo_engine.cli import main

    fs = s3["fs"]
    data = _put(fs, "logs/verify.parquet", pq.read_table(small_example))
    run_uri = f"s3://{BUCKET}/runs/to_verify"
    cache = ["--set", f"embed.cache_dir={tmp_path / 'cache'}", "--set", "embed.device=cpu"]
    assert main(["--quiet", "run", "--data", data, "--out", run_uri, "--proposer", "none", *cache]) == 0
    replay = ["--set", "generation.backend.kind=replay", "--set", f"generation.backend.replay.path={small_example}",
              "--set", "generation.backend.replay.text_column=prompt_text", "--set", "verify.max_queries=10",
              "--set", "verify.seeds=all"]
    capsys.readouterr()
    assert main(["verify", run_uri, *replay, *cache]) == 0
    got = json.loads(fs.open_input_stream(f"{BUCKET}/runs/to_verify/verify/verification.json").read())
    assert got["budget"]["queries"] == 10 and got["arms"][0]["role"] == "incumbent"
    manifest = json.loads(fs.open_input_stream(f"{BUCKET}/runs/to_verify/manifest.json").read())
    assert manifest["status"] == "ok" and manifest["uploaded_to"] == run_uri
    assert "Verification with the LLM" in fs.open_input_stream(f"{BUCKET}/runs/to_verify/report.html").read().decode()
    assert main(["verify", f"s3://{BUCKET}/runs/nothing_here", *replay]) == 2
    assert "no manifest.json there" in capsys.readouterr().err
