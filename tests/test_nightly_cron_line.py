"""The cron recipe of docs/ray_jobs.md, run as cron would run it (issue 23): the crontab line is read from the doc,
its schedule fields checked, its command run through `/bin/sh -c` with cron's `%` unescaping, against a local Ray
head started by the test (the `ray job submit` CLI, the job server, `python -m jobs.nightly`). Only the host names
and the shared mount are replaced (the head's dashboard address, a temporary folder for /mnt/shared, /var/log and
the checkout). Not tested: cron itself firing at 02:15 (the schedule fields are only checked for validity)."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.nightly_logs import write_two_days
from tests.test_generation_ray_job import BIN, ray_head  # noqa: F401 (the module-scoped local Ray head fixture)

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.ray, pytest.mark.slow]

#: allowed range of each crontab time field (minute, hour, day of month, month, day of week)
CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


def cron_line() -> tuple[list[str], str]:
    """The crontab entry of docs/ray_jobs.md: its five schedule fields and its command (continuations joined)."""
    doc = (ROOT / "docs" / "ray_jobs.md").read_text()
    block = re.search(r"# crontab -e[^\n]*\n(.*?)```", doc, re.S)
    assert block, "docs/ray_jobs.md lost its crontab block"
    line = re.sub(r"\\\n\s*", "", block.group(1)).strip()
    fields = line.split(None, 5)
    return fields[:5], fields[5]


def check_schedule(fields: list[str]) -> None:
    for field, (lo, hi) in zip(fields, CRON_RANGES):
        for part in field.split(","):
            base = part.split("/")[0]
            if base == "*":
                continue
            for value in base.split("-"):
                assert value.isdigit() and lo <= int(value) <= hi, f"crontab field {field!r} is outside {lo}-{hi}"


def as_cron_runs_it(command: str) -> str:
    """cron turns an unescaped % into a newline (the rest is stdin) and '\\%' into '%'."""
    assert re.search(r"(?<!\\)%", command) is None, "an unescaped % in a crontab command cuts it short"
    return command.replace("\\%", "%")


def test_the_schedule_check_refuses_an_impossible_time():
    with pytest.raises(AssertionError):
        check_schedule(["15", "25", "*", "*", "*"])
    with pytest.raises(AssertionError):
        as_cron_runs_it("python -m jobs.nightly --new $(date -u +%F).parquet")


@pytest.mark.timeout(300)
def test_the_docs_cron_line_runs_one_night_through_ray_job_submit(ray_head, tmp_path):  # noqa: F811
    address, env = ray_head
    fields, command = cron_line()
    check_schedule(fields)
    command = as_cron_runs_it(command)
    shared, log = tmp_path / "shared", tmp_path / "cpo-nightly.log"
    today = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    day1, _ = write_two_days(tmp_path / "days")
    (shared / "logs").mkdir(parents=True)
    day1.rename(shared / "logs" / f"{today}.parquet")
    for old, new in (("cd /opt/cpo", f"cd {ROOT}"), ("http://HEAD_HOST:8265", address), ("/mnt/shared", str(shared)),
                     ("/var/log/cpo-nightly.log", str(log))):
        assert old in command, f"the cron line no longer has {old!r}"
        command = command.replace(old, new)
    # the night's own settings for a 2-core test machine, appended after the doc's flags
    command = command.replace(" >> ", " --cv 3 --set embed.device=cpu >> ", 1)
    run_env = dict(env, PATH=f"{BIN}:{os.environ['PATH']}")
    done = subprocess.run(["/bin/sh", "-c", command], env=run_env, timeout=280)
    text = log.read_text()
    assert done.returncode == 0, text[-4000:]
    assert f"nightly {today}:" in text and "succeeded" in text.lower()
    report = json.loads((shared / "nightly" / "runs" / today / "report.json").read_text())
    assert report["model_status"] == "updated"
    assert any((shared / "cpo_cache").iterdir()), "the embedding cache was not written to the shared mount"
