"""A nightly state on gs:// goes through the same code as on s3:// (pyarrow.fs): its lock object, the pull into a
local mirror, the push with the pointers last, the completion of a killed commit and the copy of what it serves,
against a real GCS API server on localhost (the ``gcs`` fixture of tests/test_object_store_gcs.py). The nights
themselves run in tests/test_nightly_object_store.py (s3://); here the mirror's files are written by hand."""

from __future__ import annotations

import json

import pyarrow.fs as pafs
import pytest

from cpo_engine.exceptions import BusyError
from tests.test_object_store_gcs import BUCKET, gcs  # noqa: F401 (gcs: the emulator fixture)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _put(fs, key: str, body: bytes) -> None:
    with fs.open_output_stream(f"{BUCKET}/{key}") as f:
        f.write(body)


def _get(fs, key: str) -> bytes | None:
    if fs.get_file_info(f"{BUCKET}/{key}").type != pafs.FileType.File:
        return None
    return fs.open_input_stream(f"{BUCKET}/{key}").read()


def _objects(fs, prefix: str) -> list[str]:
    infos = fs.get_file_info(pafs.FileSelector(f"{BUCKET}/{prefix}", recursive=True, allow_not_found=True))
    return sorted(i.path[len(BUCKET) + 1:] for i in infos if i.type == pafs.FileType.File)


def test_a_gs_state_is_locked_pulled_pushed_pointers_last_and_served(gcs, tmp_path, monkeypatch):  # noqa: F811
    from cpo_engine.policy.live import fetch_state, live_run
    from cpo_engine.workflows import nightly_remote
    from cpo_engine.workflows.nightly_remote import StateLock, pull, push, recover

    monkeypatch.setenv("CPO_STAGING_DIR", str(tmp_path / "staging"))
    fs, uri, key = gcs["fs"], f"gs://{BUCKET}/nightly/state", "nightly/state"
    first = {"date": "d1", "run": "runs/d1"}
    _put(fs, f"{key}/current.json", json.dumps(first).encode())
    _put(fs, f"{key}/live.json", json.dumps(first | {"kind": "static", "id": "p", "text": "t"}).encode())
    for name in ("model/bundle.json", "model/model.json", "assignment.parquet", "prompts.parquet", "report.json"):
        _put(fs, f"{key}/runs/d1/{name}", b"{}")
    _put(fs, f"{key}/runs/d0/report.json", b"{}")
    _put(fs, f"{key}/triplets/d1.parquet", b"day 1")

    def night(date: str):
        """What a night does on its mirror: its run folder, its day of triplets, then both pointers."""
        with StateLock(uri) as lock:
            with pytest.raises(BusyError, match="is locked by another"):
                StateLock(uri).__enter__()
            local, before = pull(uri, date)
            live_model = json.loads((local / "live.json").read_text())["run"]
            assert (local / live_model / "model/bundle.json").is_file() and (local / "triplets/d1.parquet").is_file()
            assert not (local / "runs/d0").exists() and not (local / live_model / "report.json").exists()
            for name in ("model/bundle.json", "report.json", "manifest.json"):
                (local / f"runs/{date}/{name}").parent.mkdir(parents=True, exist_ok=True)
                (local / f"runs/{date}/{name}").write_text("{}")
            (local / f"triplets/{date}.parquet").write_bytes(f"day {date}".encode())
            now = {"date": date, "run": f"runs/{date}"}
            (local / "current.json").write_text(json.dumps(now))
            (local / "live.json").write_text(json.dumps(now | {"kind": "static", "id": "q", "text": "u"}))
            return push(uri, local, before, f"runs/{date}", lock)

    assert night("d2") == ["triplets/d2.parquet", "live.json", "current.json"]  # the pointers last
    assert json.loads(_get(fs, f"{key}/current.json"))["run"] == "runs/d2"
    objects = _objects(fs, key)
    assert f"{key}/runs/d2/manifest.json" in objects and f"{key}/triplets/d2.parquet" in objects
    assert not [o for o in objects if "/staged/" in o or o.endswith(("LOCK", "commit.json"))], objects
    live = live_run(fetch_state(uri), shown=uri)  # what Policy.load(gs://...) serves
    assert live.record["id"] == "q" and (live.run / "model" / "bundle.json").is_file()

    # killed after the commit point: readers still see night d2; the next night's recover completes d3
    def killed(*args):  # noqa: ANN002
        raise KeyboardInterrupt("injected")

    monkeypatch.setattr(nightly_remote, "_apply", killed)
    with pytest.raises(KeyboardInterrupt):
        night("d3")
    monkeypatch.undo()
    assert json.loads(_get(fs, f"{key}/current.json"))["run"] == "runs/d2" and _get(fs, f"{key}/commit.json")
    assert _get(fs, f"{key}/LOCK") is None  # released on the way out
    recover(uri)
    assert json.loads(_get(fs, f"{key}/current.json"))["run"] == "runs/d3"
    assert json.loads(_get(fs, f"{key}/live.json"))["run"] == "runs/d3"
    assert _get(fs, f"{key}/triplets/d3.parquet") == b"day d3" and _get(fs, f"{key}/commit.json") is None
