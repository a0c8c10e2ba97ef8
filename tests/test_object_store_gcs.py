"""gs:// end to end against a real GCS API server on localhost (gcp-storage-emulator, from .venv-s3), reached the
way a user points gs:// at a server other than Google's: ``STORAGE_EMULATOR_HOST`` in the environment. validate,
run and assign read logs, queries and a model from a bucket and write their run folder and output there; no
credential (a fake service-account key named by GOOGLE_APPLICATION_CREDENTIALS) lands in any file written."""

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
SERVER_PY = ROOT / ".venv-s3" / "bin" / "python"
FAKE_KEY = "-----BEGIN PRIVATE KEY-----cpo-gcs-test-Vb73kQ0pLz-----END PRIVATE KEY-----"  # must reach no file
BUCKET = "cpo-gcs-logs"


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    """gcp-storage-emulator on a free port (in memory, one bucket), STORAGE_EMULATOR_HOST pointing at it."""
    if not SERVER_PY.exists():
        pytest.fail(f"{SERVER_PY} is missing: the gs:// tests need gcp-storage-emulator in .venv-s3; "
                    "run scripts/install_engines.sh (it installs requirements/s3-server.lock there)")
    port = free_port()
    tmp = tmp_path_factory.mktemp("gcs")
    log = tmp / "emulator.log"
    creds = tmp / "service_account.json"
    creds.write_text(json.dumps({"type": "service_account", "private_key": FAKE_KEY}))
    env = {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}", "GOOGLE_APPLICATION_CREDENTIALS": str(creds),
           "CPO_STAGING_DIR": str(tmp_path_factory.mktemp("staging"))}
    import pyarrow.fs as pafs

    admin = pafs.GcsFileSystem(anonymous=True, scheme="http", endpoint_override=f"127.0.0.1:{port}")
    argv = [str(SERVER_PY), "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1", "--port", str(port),
            "--in-memory", "--default-bucket", BUCKET]
    with store_server(argv, port, log, env, "gcp-storage-emulator",  # ready once the default bucket exists
                      ready=lambda: admin.get_file_info(BUCKET).type == pafs.FileType.Directory):
        yield {"fs": admin, "env": env, "port": port, "creds": creds}


def _put(fs, key: str, table: pa.Table) -> str:
    return put(fs, "gs", BUCKET, key, table)


def test_the_emulator_endpoint_comes_from_the_environment(gcs):
    """STORAGE_EMULATOR_HOST (what Google's clients read) sends gs:// to the local server: write, read, list."""
    from cpo_engine.data.storage import list_files, location, path_type

    fs, inner = location(f"gs://{BUCKET}/probe/a.parquet")
    assert inner == f"{BUCKET}/probe/a.parquet" and fs.type_name == "gcs"
    _put(fs, "probe/a.parquet", pa.table({"x": [1, 2, 3]}))
    _put(fs, "probe/sub/b.parquet", pa.table({"x": [4]}))
    assert path_type(f"gs://{BUCKET}/probe/a.parquet") == "file" and path_type(f"gs://{BUCKET}/probe") == "dir"
    assert path_type(f"gs://{BUCKET}/probe/none.parquet") is None
    assert list_files(f"gs://{BUCKET}/probe/") == [f"{BUCKET}/probe/a.parquet", f"{BUCKET}/probe/sub/b.parquet"]
    assert gcs["fs"].get_file_info(f"{BUCKET}/probe/a.parquet").size > 0  # on the server, not elsewhere


def test_a_bad_emulator_endpoint_is_a_config_error(gcs, monkeypatch):
    from cpo_engine.data.storage import location
    from cpo_engine.exceptions import ConfigError

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "ftp://127.0.0.1:1/x")
    with pytest.raises(ConfigError, match="STORAGE_EMULATOR_HOST='ftp://127.0.0.1:1/x' is not an endpoint"):
        location(f"gs://{BUCKET}/x.parquet")


def test_validate_reads_gs_files_and_folders_and_names_a_missing_uri(gcs, small_example):
    table = pq.read_table(small_example)
    uri = _put(gcs["fs"], "v/logs.parquet", table)
    _put(gcs["fs"], "v/shards/part-0.parquet", table.slice(0, 600))
    _put(gcs["fs"], "v/shards/part-1.parquet", table.slice(600))
    done = subprocess.run([sys.executable, "-m", "cpo_engine.cli", "validate", uri, "--json"], capture_output=True,
                          text=True, env={**os.environ, **gcs["env"]}, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rows"] == table.num_rows
    from cpo_engine.data import read_triplets

    assert read_triplets(f"gs://{BUCKET}/v/shards/").num_rows == table.num_rows
    from cpo_engine.cli import main

    assert main(["validate", f"gs://{BUCKET}/v/nothere.parquet"]) == 2


def test_run_and_assign_read_and_write_gs_and_write_no_secret(gcs, small_example, tmp_path):
    run_and_assign_round_trip(gcs["fs"], "gs", BUCKET, small_example, tmp_path, Path(gcs["env"]["CPO_STAGING_DIR"]),
                              [FAKE_KEY.encode(), str(gcs["creds"]).encode()])


def test_a_missing_gs_bucket_is_refused_before_any_work(gcs, small_example, capsys):
    from cpo_engine.cli import main

    assert main(["--quiet", "run", "--data", str(small_example), "--out", "gs://no-such-bucket/r", "--proposer",
                 "none"]) == 2
    err = capsys.readouterr().err
    assert "bucket 'no-such-bucket' does not exist" in err and "STORAGE_EMULATOR_HOST" in err


def test_the_embedding_cache_on_gs_reads_back_its_vectors(gcs, encoder):
    """embed.cache_dir=gs://...: vectors committed as whole shard objects, read back by a new cache object."""
    import numpy as np
    import pyarrow.fs as pafs

    from cpo_engine.embedding import EmbeddingCache

    uri, texts = f"gs://{BUCKET}/cpo_cache", ["One apple.", "Two pears.", "Three plums."]
    first = EmbeddingCache(uri, shard_rows=2)
    vecs = first.embed(encoder, texts)
    assert (first.stats.hits, first.stats.misses) == (0, 3)
    again = EmbeddingCache(uri)
    more = again.embed(encoder, [*texts, "Four figs."])
    assert (again.stats.hits, again.stats.misses) == (3, 1)
    np.testing.assert_array_equal(vecs, more[:3])
    shards = [f for f in gcs["fs"].get_file_info(pafs.FileSelector(f"{BUCKET}/cpo_cache", recursive=True))
              if f.type == pafs.FileType.File]
    assert sorted(pq.read_table(f.path, filesystem=gcs["fs"]).num_rows for f in shards) == [1, 1, 2]
