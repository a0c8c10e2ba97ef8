"""`cpo nightly --state s3://...` (issue 23): a nightly state on an object store, against a real S3 API server on
localhost (moto's server mode, the ``s3`` fixture of tests/test_object_store.py). Two nights of real logs
(tests/nightly_logs.py: the second promotes plain on measured held-out logs) on an s3:// state; `cpo assign` and
`Policy.load` serve the remote live prompt; a held lock object is refused; a night that fails midway (damaged new
logs, an upload that breaks before the commit point, a crash after it) leaves the remote pointers as they were or
completed by the next night; no credential reaches any file."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from cpo_engine.exceptions import BusyError, DataError
from tests.nightly_logs import new_queries, write_two_days
from tests.test_object_store import BUCKET, KEY_ID, SECRET, s3  # noqa: F401 (s3: the moto server fixture)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

STATE = f"s3://{BUCKET}/nightly/state"


def _cfg(state: str, new: str, date: str, **kw):
    from cpo_engine.causal import CausalConfig
    from cpo_engine.search.config import ProposerConfig
    from cpo_engine.settings import NightlyConfig, PromoteConfig

    cfg = NightlyConfig(state=state, new=new, date=date, causal=CausalConfig(cv=3), proposer=ProposerConfig(kind="none"),
                        promote=PromoteConfig(holdout_share=0.5), **kw)
    cfg.embed.device = "cpu"
    return cfg


def _night(state: str, new: str, date: str, cache: Path, encoder, **kw):
    from cpo_engine.workflows.common import Representer
    from cpo_engine.workflows.nightly import run_nightly

    cfg = _cfg(state, new, date, **kw)
    return run_nightly(cfg, representer=Representer(cfg.embed, cache_dir=cache, encoder=encoder))


def _get(fs, uri: str) -> bytes | None:
    key = uri[len("s3://"):]
    if fs.get_file_info(key).type != pafs.FileType.File:
        return None
    return fs.open_input_stream(key).read()


def _objects(fs, prefix: str) -> list[str]:
    infos = fs.get_file_info(pafs.FileSelector(f"{BUCKET}/{prefix}", recursive=True, allow_not_found=True))
    return sorted(i.path[len(BUCKET) + 1:] for i in infos if i.type == pafs.FileType.File)


@pytest.fixture(scope="module")
def nights(s3, tmp_path_factory, encoder):  # noqa: F811
    """Two nights on the s3:// state: day 1 (observational), then day 2 (a grid: plain goes live) with the local
    mirror deleted in between (a fresh machine: everything the night needs comes from the store)."""
    from cpo_engine.workflows.nightly_remote import mirror_folder

    tmp = tmp_path_factory.mktemp("nightly_s3")
    fs = s3["fs"]
    uris = []
    for day in write_two_days(tmp / "logs"):
        with fs.open_output_stream(f"{BUCKET}/logs/{day.name}") as f:
            f.write(day.read_bytes())
        uris.append(f"s3://{BUCKET}/logs/{day.name}")
    cache = tmp / "cache"
    r1 = _night(STATE, uris[0], "2026-01-01", cache, encoder)
    after1 = {name: _get(fs, f"{STATE}/{name}") for name in ("current.json", "live.json")}
    shutil.rmtree(mirror_folder(STATE))
    r2 = _night(STATE, uris[1], "2026-01-02", cache, encoder)
    return {"fs": fs, "tmp": tmp, "cache": cache, "r1": r1, "r2": r2, "after1": after1, "days": uris}


def test_two_nights_on_s3_commit_to_the_store_and_the_second_promotes(nights):
    fs, r1, r2 = nights["fs"], nights["r1"], nights["r2"]
    assert json.loads(nights["after1"]["current.json"])["run"] == "runs/2026-01-01"
    assert r1.model_status == "updated" and r2.model_status == "updated"
    assert r2.promotion["status"] == "promoted", r2.promotion["reason"]
    assert r2.report_uri == f"{STATE}/runs/2026-01-02/report.json"
    current = json.loads(_get(fs, f"{STATE}/current.json"))
    live = json.loads(_get(fs, f"{STATE}/live.json"))
    assert current["run"] == "runs/2026-01-02" and live["run"] == "runs/2026-01-02"
    assert live["kind"] == "static" and live["id"] == "plain" and live["evidence"]["difference"]["ci_low"] > 0
    objects = _objects(fs, "nightly/state")
    for day in ("2026-01-01", "2026-01-02"):  # each day stored, each run folder whole, its manifest uploaded
        assert f"nightly/state/triplets/{day}.parquet" in objects
        for name in ("manifest.json", "report.json", "model/bundle.json", "model/policy.json", "assignment.parquet"):
            assert f"nightly/state/runs/{day}/{name}" in objects, (day, name)
    # nothing of the commit machinery or the lock is left, and the local embedding cache is never pushed
    assert not [o for o in objects if "/staged/" in o or o.endswith(("/LOCK", "/commit.json", ".cpo.lock"))
                or "/cache/" in o], objects
    # night 2 ran on a fresh mirror: its window held day 1, pulled from the store
    assert r2.dates == ["2026-01-01", "2026-01-02"]
    report = json.loads(_get(fs, f"{STATE}/runs/2026-01-02/report.json"))
    assert report["config"]["state"] == STATE and report["model_status"] == "updated"


def test_assign_and_policy_load_serve_the_live_prompt_of_an_s3_state(nights, capsys):
    from cpo_engine import Policy
    from cpo_engine.cli import main

    policy = Policy.load(STATE)
    assert policy.static_prompt_id == "plain" and policy.live["run"] == "runs/2026-01-02"
    assert policy.live["state"] == STATE
    queries = new_queries(nights["tmp"])
    out = nights["tmp"] / "assignment.parquet"
    capsys.readouterr()
    assert main(["assign", "--model", STATE, "--queries", str(queries), "--out", str(out),
                 "--set", "embed.device=cpu", "--set", f"embed.cache_dir={nights['cache']}"]) == 0
    got = pq.read_table(out)
    assert got.num_rows == 20 and set(got.column("recommended_prompt_id").to_pylist()) == {"plain"}
    assert json.loads(got.schema.metadata[b"cpo_engine.policy"])["live"]["id"] == "plain"
    # one night's own run on the store serves too, and a URI that is no state is not read as one
    assert Policy.load(f"{STATE}/runs/2026-01-01", warn=False).live is None


def test_a_remote_state_with_nothing_live_names_its_uri_in_the_fix(s3):  # noqa: F811
    from cpo_engine import Policy
    from cpo_engine.exceptions import ConfigError

    fs = s3["fs"]
    with fs.open_output_stream(f"{BUCKET}/nolive/current.json") as f:
        f.write(json.dumps({"date": "2026-01-01", "run": "runs/2026-01-01"}).encode())
    with pytest.raises(ConfigError, match="nothing is live yet") as exc:
        Policy.load(f"s3://{BUCKET}/nolive")
    assert f"--model s3://{BUCKET}/nolive/runs/2026-01-01" in str(exc.value)


def test_a_held_lock_object_is_refused_with_its_owner_and_the_fix(s3, tmp_path, capsys, monkeypatch):  # noqa: F811
    from cpo_engine.cli import main
    from cpo_engine.workflows import nightly_remote
    from cpo_engine.workflows.nightly_remote import StateLock

    fs, state = s3["fs"], f"s3://{BUCKET}/locked/state"
    other = {"owner": "feedc0de", "host": "scheduler-7", "pid": 4242, "acquired_at": "2026-01-02T01:00:00Z",
             "heartbeat_unix": time.time() - 30}
    with fs.open_output_stream(f"{BUCKET}/locked/state/LOCK") as f:
        f.write(json.dumps(other).encode())
    logs = tmp_path / "new.parquet"
    logs.write_bytes(b"never read: the lock is checked first")
    assert main(["nightly", "--state", state, "--new", str(logs), "--date", "2026-01-03"]) == 2
    err = capsys.readouterr().err
    for part in (f"{state}/LOCK", "feedc0de", "scheduler-7", "4242", "wait for that night", f"delete {state}/LOCK"):
        assert part in err, (part, err)
    assert json.loads(_get(fs, f"{state}/LOCK"))["owner"] == "feedc0de"  # the other night's lock stays
    assert _objects(fs, "locked") == ["locked/state/LOCK"]  # nothing else was written
    # a lock nobody refreshed for longer than the stale timeout is taken over, and released at the end
    other["heartbeat_unix"] = time.time() - nightly_remote.STALE_S - 1
    with fs.open_output_stream(f"{BUCKET}/locked/state/LOCK") as f:
        f.write(json.dumps(other).encode())
    with StateLock(state) as lock:
        held = json.loads(_get(fs, f"{state}/LOCK"))
        assert held["owner"] == lock.token and held["pid"] > 0 and held["host"]
        with pytest.raises(BusyError, match="is locked by another"):
            StateLock(state).__enter__()  # a second night meanwhile is refused
    assert _get(fs, f"{state}/LOCK") is None
    # a held lock is refreshed (its heartbeat moves), so a long night is not taken for a dead one
    monkeypatch.setattr(nightly_remote, "HEARTBEAT_S", 0.2)
    with StateLock(state):
        first = json.loads(_get(fs, f"{state}/LOCK"))["heartbeat_unix"]
        time.sleep(1.5)
        assert json.loads(_get(fs, f"{state}/LOCK"))["heartbeat_unix"] > first
    assert _get(fs, f"{state}/LOCK") is None


def test_a_damaged_state_file_on_the_store_is_named_by_its_uri(s3, tmp_path, capsys):  # noqa: F811
    from cpo_engine.cli import main

    fs, state = s3["fs"], f"s3://{BUCKET}/damaged/state"
    with fs.open_output_stream(f"{BUCKET}/damaged/state/current.json") as f:
        f.write(b'{"run": "runs/2026-01-01"')  # cut short
    logs = tmp_path / "new.parquet"
    logs.write_bytes(b"never read: current.json is read first")
    assert main(["nightly", "--state", state, "--new", str(logs), "--date", "2026-01-02"]) == 2
    err = capsys.readouterr().err
    assert f"in {state}/current.json" in err and "not valid JSON" in err and "staging" not in err, err
    assert _objects(fs, "damaged") == ["damaged/state/current.json"]  # the lock released, nothing written


def test_a_night_that_fails_midway_leaves_the_remote_pointers_as_they_were(nights, encoder, monkeypatch):
    from cpo_engine import Policy
    from cpo_engine.data import storage
    from cpo_engine.workflows import nightly_remote

    fs = nights["fs"]
    pointers = {name: _get(fs, f"{STATE}/{name}") for name in ("current.json", "live.json")}

    def unchanged() -> None:
        for name, body in pointers.items():
            assert _get(fs, f"{STATE}/{name}") == body, name
        objects = _objects(fs, "nightly/state")
        assert "nightly/state/LOCK" not in objects and "nightly/state/commit.json" not in objects
        assert "nightly/state/triplets/2026-01-03.parquet" not in objects
        assert Policy.load(STATE).live["run"] == "runs/2026-01-02"

    # damaged new logs, found after the pull: the night fails, nothing is pushed
    with fs.open_output_stream(f"{BUCKET}/logs/damaged.parquet") as f:
        f.write(b"PAR1 this is not a parquet file")
    with pytest.raises(DataError):
        _night(STATE, f"s3://{BUCKET}/logs/damaged.parquet", "2026-01-03", nights["cache"], encoder)
    unchanged()

    # the upload breaks on the night's run folder (its manifest, the last file of the folder): the pointers must
    # not have moved to a run that is not fully uploaded
    real_upload = storage._upload

    def broken(fs_, src, dst):  # noqa: ANN001
        if dst.endswith("runs/2026-01-03/manifest.json"):
            raise OSError("injected: connection reset by peer")
        return real_upload(fs_, src, dst)

    monkeypatch.setattr(storage, "_upload", broken)
    day2 = nights["days"][1]
    with pytest.raises(DataError, match="cannot write the run folder"):
        _night(STATE, day2, "2026-01-03", nights["cache"], encoder, window_days=1)
    unchanged()
    monkeypatch.setattr(storage, "_upload", real_upload)

    # killed after the commit point (commit.json written, nothing moved yet): still as it was for readers, and the
    # next night (its recover) completes the commit
    def killed(*args):  # noqa: ANN002
        raise KeyboardInterrupt("injected: killed after the commit point")

    monkeypatch.setattr(nightly_remote, "_apply", killed)
    with pytest.raises(KeyboardInterrupt):
        _night(STATE, day2, "2026-01-03", nights["cache"], encoder, window_days=1)
    monkeypatch.undo()
    assert _get(fs, f"{STATE}/commit.json") is not None and _get(fs, f"{STATE}/current.json") == pointers["current.json"]
    assert Policy.load(STATE).live["run"] == "runs/2026-01-02"
    nightly_remote.recover(STATE)
    assert json.loads(_get(fs, f"{STATE}/current.json"))["run"] == "runs/2026-01-03"
    objects = _objects(fs, "nightly/state")
    assert "nightly/state/triplets/2026-01-03.parquet" in objects and "nightly/state/commit.json" not in objects
    assert not [o for o in objects if "/staged/" in o]


def test_no_credential_reaches_the_store_or_the_mirror(nights, s3):  # noqa: F811
    fs = nights["fs"]
    objects = fs.get_file_info(pafs.FileSelector(BUCKET, recursive=True))
    written = [fs.open_input_stream(o.path).read() for o in objects if o.type == pafs.FileType.File]
    written += [p.read_bytes() for root in (Path(s3["env"]["CPO_STAGING_DIR"]), nights["tmp"])
                for p in root.rglob("*") if p.is_file()]
    assert len(written) > 20
    for blob in written:
        assert SECRET.encode() not in blob and KEY_ID.encode() not in blob
