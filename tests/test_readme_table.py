"""The README's measured table is generated from the quick start's summary.json (kept in
docs/results/quickstart_summary.json): this fails when the two disagree."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("readme_table", ROOT / "scripts" / "readme_table.py")
readme_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(readme_table)


def test_readme_measured_table_matches_the_quick_start_record():
    assert readme_table.main(["--check"]) == 0, "run: python scripts/readme_table.py runs/quickstart"


def test_check_fails_when_a_number_is_edited_by_hand(tmp_path):
    readme, record = tmp_path / "README.md", tmp_path / "record.json"
    readme.write_text((ROOT / "README.md").read_text())
    record.write_text(readme_table.RECORD.read_text())
    args = ["--check", "--readme", str(readme), "--record", str(record)]
    assert readme_table.main(args) == 0
    rec = json.loads(record.read_text())
    value = rec["held_out"]["policies"]["causal_lcb"]["value"]
    rec["held_out"]["policies"]["causal_lcb"]["value"] = value + 0.001  # the run printed another number
    record.write_text(json.dumps(rec))
    assert readme_table.main(args) == 1


def test_regenerating_from_a_run_folder_rewrites_only_the_block(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rec = json.loads(readme_table.RECORD.read_text())
    summary = {"rows": rec["rows"], "representations": {"n_queries": rec["n_queries"], "n_prompts": rec["n_prompts"]},
               "held_out": rec["held_out"], "recommendation": rec["recommendation"] | {"details": []}, "prompts": []}
    summary["held_out"]["policies"]["causal_point"]["diff"] = -0.1234
    (run / "summary.json").write_text(json.dumps(summary))
    readme = tmp_path / "README.md"
    text = (ROOT / "README.md").read_text()
    readme.write_text(text)
    assert readme_table.main([str(run), "--readme", str(readme), "--record", str(tmp_path / "r.json")]) == 0
    new = readme.read_text()
    assert "-0.1234" in new and new.split(readme_table.BEGIN)[0] == text.split(readme_table.BEGIN)[0]
    assert new.split(readme_table.END)[1] == text.split(readme_table.END)[1]


@pytest.mark.parametrize("doc", ["README.md", "docs/guarantees.md"])
def test_every_test_the_docs_name_exists(doc):
    """The README and docs/guarantees.md back their promises with named tests (`tests/x.py::test_y`, or a file
    then `::test_y`): a renamed or deleted test must not leave a promise pointing at nothing."""
    import re

    text = (ROOT / doc).read_text()
    missing = []
    for line in text.splitlines():
        files = re.findall(r"tests/[\w/]+\.py", line)
        for f in files:
            if not (ROOT / f).is_file():
                missing.append(f)
        sources = "".join((ROOT / f).read_text() for f in files if (ROOT / f).is_file())
        for name in re.findall(r"`(?:tests/[\w/]+\.py)?(?:::)?(test_\w+)", line):
            if f"def {name}(" not in sources:
                missing.append(name)
    assert not missing, f"{doc} names tests that do not exist: {missing}"


def test_readme_is_one_page_without_measurement_conditions():
    """Issue 22: the README is for users (at most 250 lines); the device, date, load and commit of a measurement
    live in bench/results and the generated docs/benchmarks.md, not in the README's prose."""
    import re

    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250, f"README.md has {len(text.splitlines())} lines; move detail to docs/"
    assert "load average" not in text.lower() and "loadavg" not in text.lower()
    hashes = [w for w in re.findall(r"\b[0-9a-f]{7,40}\b", text) if re.search(r"[a-f]", w) and re.search(r"\d", w)]
    assert not hashes, f"commit hashes in README.md: {hashes}"
