"""Bad input through the `cpo` CLI: every case ends in success or in exit 2 with one message that names the
file or flag and the fix, never a traceback; a genuine bug still shows its traceback and exits 1."""

from __future__ import annotations

import argparse
import errno
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from cpo_engine.cli import main
from cpo_engine.commands._errors import os_message, run_guarded
from cpo_engine.edits.simulate import simulate_grid

TRUE = {"math": {"step_by_step": 0.15, "persona": 0.0, "meta_instruction": -0.12}}


def _fails_cleanly(capsys, argv: list[str], *needles: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and ("fix" in err or "did you mean" in err)
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("grid") / "grid.parquet"
    pq.write_table(simulate_grid(TRUE, n_queries=30, seed=0), path)
    return path


def _variant(grid: Path, tmp_path: Path, name: str, fn) -> Path:
    path = tmp_path / f"{name}.parquet"
    pq.write_table(fn(pq.read_table(grid)), path)
    return path


@pytest.mark.parametrize("command", ["run", "fit", "edits", "optimize", "embed", "ope"])
def test_out_that_is_a_file(capsys, tmp_path, grid, command, monkeypatch):
    """Refused before any expensive work: the embedding is never reached."""
    from cpo_engine.workflows.common import Representer

    def no_work(*args, **kwargs):
        raise AssertionError("embedding started before --out was checked")

    monkeypatch.setattr(Representer, "represent", no_work)
    (tmp_path / "afile").write_text("not a folder")
    out = str(tmp_path / "afile")
    argv = [command, "--data", str(grid), "--out", out] + (["--set", "embed.device=cpu"] if command != "edits" else [])
    if command == "optimize":
        argv += ["--model", str(tmp_path / "no_model")]  # --out is checked first
    _fails_cleanly(capsys, argv, out, "--out")


def test_out_below_a_file(capsys, tmp_path, grid):
    (tmp_path / "afile").write_text("x")
    _fails_cleanly(capsys, ["fit", "--data", str(grid), "--out", str(tmp_path / "afile" / "sub")],
                   str(tmp_path / "afile" / "sub"), "--out")


def test_os_errors_name_the_path_the_flag_and_a_fix(tmp_path):
    args = argparse.Namespace(command="run", out=str(tmp_path / "ro"), data=None, overrides=[])
    denied = PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "ro" / "features" / "x.parquet"))
    msg = os_message(denied, args)
    assert msg.startswith(str(tmp_path / "ro" / "features")) and "(from --out)" in msg and "fix:" in msg
    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "ro" / "model.json"))
    assert "disk is full" in os_message(full, args) and "(from --out)" in os_message(full, args)
    via_set = argparse.Namespace(command="run", overrides=[f"embed.cache_dir={tmp_path / 'c'}"])
    assert "(from --set embed.cache_dir)" in os_message(PermissionError(13, "denied", str(tmp_path / "c" / "x")), via_set)


def test_read_only_out_exits_2(capsys, tmp_path):
    """Read-only folders cannot be made as root, so the write fails where the OS would fail it."""
    def write() -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "ro" / "manifest.json"))

    args = argparse.Namespace(command="run", out=str(tmp_path / "ro"))
    assert run_guarded("cpo run", write, args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "(from --out): Permission denied" in err and "fix:" in err


def test_a_bug_shows_its_traceback_and_exits_1(capsys):
    def buggy() -> None:
        raise ValueError("operands could not be broadcast together")

    assert run_guarded("cpo run", buggy) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "this is a bug in cpo_engine" in err and "broadcast" in err


def test_blank_query_text_is_refused_before_any_embedding(capsys, tmp_path, grid):
    def blank(t: pa.Table) -> pa.Table:
        texts = pc.if_else(pc.equal(t["query_id"], t["query_id"][0].as_py()), "  ", t["query_text"])
        return t.set_column(t.column_names.index("query_text"), "query_text", texts)

    path = _variant(grid, tmp_path, "blank", blank)
    _fails_cleanly(capsys, ["validate", str(path)], "query_text", "empty or whitespace-only", "rows 0")
    # the cache folder is never created: the table is refused before the encoder runs
    _fails_cleanly(capsys, ["run", "--data", str(path), "--out", str(tmp_path / "r"), "--set",
                            f"embed.cache_dir={tmp_path / 'cache'}"], "query_text")
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("blank", ["", "   "])
def test_a_blank_prompt_is_the_no_instruction_baseline(capsys, tmp_path, grid, blank):
    """An empty prompt_text (the query alone) runs end to end; before, the edit operators crashed on it."""
    def with_blank(t: pa.Table) -> pa.Table:
        texts = pc.if_else(pc.equal(t["prompt_id"], t["prompt_id"][0].as_py()), blank, t["prompt_text"])
        return t.set_column(t.column_names.index("prompt_text"), "prompt_text", texts)

    path = _variant(grid, tmp_path, "blank_prompt", with_blank)
    assert main(["run", "--data", str(path), "--out", str(tmp_path / "r"), "--cv", "2", "--proposer", "edit",
                 "--rounds", "2",
                 "--set", "embed.device=cpu", "--set", f"embed.cache_dir={tmp_path / 'cache'}",
                 "--set", "pca.query_components=4"]) == 0, capsys.readouterr().err
    assert (tmp_path / "r" / "search" / "candidates.parquet").exists()


def test_every_edit_operator_handles_blank_texts():
    from cpo_engine.search.operators import OPERATORS

    rng = np.random.default_rng(0)
    for op in OPERATORS:
        for text in ("", "   ", "Solve it."):
            for donor in ("", " ", "Let's think step by step. Then answer.", None):
                for _ in range(5):
                    out = op.fn(text, rng, donor)
                    assert out is None or isinstance(out, str)


def test_all_zero_weights_are_refused(capsys, tmp_path, grid):
    path = _variant(grid, tmp_path, "w0", lambda t: t.append_column("weight", pa.array(np.zeros(t.num_rows))))
    _fails_cleanly(capsys, ["validate", str(path)], "weight", "every weight is 0")
    _fails_cleanly(capsys, ["edits", "--data", str(path), "--out", str(tmp_path / "e")], "every weight is 0")


def test_edits_on_continuous_scores(capsys, tmp_path, grid):
    """Scores x 1e6 (or a rubric 1-5) are legitimate: the analysis runs (x 1e6 overflowed the prior before),
    effects are in score units and the edit prior is about the one of the 0/1 scores (its temperature is a
    fraction of the score range)."""
    def scaled(a: float, b: float):
        return lambda t: t.set_column(t.column_names.index("score"), "score",
                                      pc.add(pc.multiply(t["score"], a), b))

    priors, effects = {}, {}
    for name, (a, b) in {"unit": (1.0, 0.0), "big": (1e6, 0.0), "rubric": (4.0, 1.0)}.items():
        path = _variant(grid, tmp_path, name, scaled(a, b))
        assert main(["edits", "--data", str(path), "--out", str(tmp_path / name)]) == 0, capsys.readouterr().err
        priors[name] = json.loads((tmp_path / name / "edit_prior.json").read_text())["default"]
        rows = (tmp_path / name / "edit_effects.csv").read_text().splitlines()
        effects[name] = len(rows)
    capsys.readouterr()
    for name in ("big", "rubric"):  # the ridge nuisances' penalty is not scale-free (the parent's score is a
        assert priors[name] == pytest.approx(priors["unit"], rel=0.05)  # control), hence not exactly equal
    assert len(set(effects.values())) == 1


def test_edits_unknown_learner(capsys, tmp_path, grid):
    _fails_cleanly(capsys, ["edits", "--data", str(grid), "--out", str(tmp_path / "e"), "--learner", "rigde"],
                   "did you mean 'ridge'")


def test_job_entrypoint_user_error_and_bug(capsys, tmp_path, monkeypatch):
    from jobs.fit import main as job

    assert job(["--data", str(tmp_path / "nope.parquet"), "--out", str(tmp_path / "o")]) == 2  # the CLI's code
    err = capsys.readouterr().err
    assert "nope.parquet" in err and "Traceback" not in err

    import cpo_engine.workflows.fit as fit_module

    def broken(cfg):
        raise KeyError("coef_")

    monkeypatch.setattr(fit_module, "fit", broken)
    assert job(["--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "this is a bug" in err


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, grid) -> Path:
    out = tmp_path_factory.mktemp("fit") / "fit"
    assert main(["fit", "--data", str(grid), "--out", str(out), "--cv", "2", "--set", "embed.device=cpu",
                 "--set", f"embed.cache_dir={out.parent / 'cache'}", "--set", "pca.query_components=4"]) == 0
    return out


@pytest.mark.parametrize("damage", ["pca", "model_json", "model_edit"])
def test_optimize_with_a_damaged_bundle(capsys, tmp_path, grid, bundle, damage):
    import shutil

    fit_dir = shutil.copytree(bundle, tmp_path / "fit")
    target = {"pca": "query_pca.safetensors", "model_json": "model.json", "model_edit": "model.json"}[damage]
    path = fit_dir / "model" / target
    if damage == "model_edit":
        meta = json.loads(path.read_text())
        meta["d_t"] += 1
        path.write_text(json.dumps(meta))
    else:
        path.write_bytes(path.read_bytes()[:100])
    _fails_cleanly(capsys, ["optimize", "--data", str(grid), "--model", str(fit_dir), "--out", str(tmp_path / "o")],
                   target)


def test_optimize_with_the_llm_proposer_against_a_dead_server(capsys, tmp_path, grid, bundle):
    """Nothing listens on port 9: before, the search went on with the seeds only and reported success."""
    _fails_cleanly(capsys, ["optimize", "--data", str(grid), "--model", str(bundle), "--out", str(tmp_path / "o"),
                            "--mode", "search", "--proposer", "llm", "--llm-base-url", "http://127.0.0.1:9/v1",
                            "--rounds", "1", "--beam-width", "1", "--query-beams", "0", "--children", "2"],
                   "calls of the LLM proposer failed", "connection error", "--proposer edit")


def test_hostile_ids_write_nothing_outside_the_output_folder(tmp_path, capsys):
    """What already held (issue 12): ids are data, never path parts."""
    rows = [{"query_id": f"../../etc/q{q}", "query_text": f"What is {q} plus 10?", "prompt_id": f"/tmp/../p{p}",
             "prompt_text": f"Prompt {p}.", "score": float((q + p) % 2), "gold_answer": float(q + 10),
             "raw_answer": f"The answer is {q + 10}."} for q in range(4) for p in range(2)]
    (tmp_path / "work").mkdir()
    log = tmp_path / "work" / "log.parquet"
    pq.write_table(pa.Table.from_pylist(rows), log)
    before = {p for p in tmp_path.rglob("*")}
    assert main(["generate", "--queries", str(log), "--backend", "replay", "--replay", str(log),
                 "--out", str(tmp_path / "work" / "gen")]) == 0
    capsys.readouterr()
    new = {p for p in tmp_path.rglob("*")} - before
    gen = tmp_path / "work" / "gen"
    assert new and all(p == gen or gen in p.parents for p in new)


def test_the_report_escapes_every_text(tmp_path):
    from cpo_engine.report import Column, ReportData, Table, write_report

    evil = "<script>alert(1)</script>"
    table = Table([Column("text", evil)], [{"text": evil}], note=evil)
    page = write_report(tmp_path, ReportData(title=evil, headline=evil, headline_details=[evil], commands=[evil],
                                             prompts=table, summary={evil: evil}, notes=[evil], candidates=table,
                                             trace=table, glossary={evil: evil})).read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page


@pytest.mark.parametrize("command", ["run", "fit"])
def test_settings_that_cannot_work_are_refused_before_any_work(capsys, tmp_path, grid, command, monkeypatch):
    """cuml_ridge without cuML, or a damaged --edit-prior, failed only after the embedding and the fit and left
    summary.json, features/ and model/ behind; now refused first, and the --out folder is not even created."""
    from cpo_engine.workflows.common import Representer

    def no_work(*args, **kwargs):
        raise AssertionError("embedding started before the settings were checked")

    monkeypatch.setattr(Representer, "represent", no_work)
    out = tmp_path / "o"
    base = [command, "--data", str(grid), "--out", str(out), "--set", "embed.device=cpu"]
    assert main(base + ["--set", "causal.model_y=cuml_ridge"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "'cuml' is needed here but is not installed" in err and "cpo-engine[cuml]" in err
    assert not out.exists()
    if command == "run":
        bad = tmp_path / "prior.json"
        bad.write_text('{"format": "not an edit prior"')
        _fails_cleanly(capsys, base + ["--proposer", "edit", "--set", f"proposer.edit_prior={bad}"], str(bad))
        assert not out.exists()


def test_a_bad_ope_policy_is_refused_before_any_embedding(capsys, tmp_path, grid, monkeypatch):
    """`cpo ope --policy` with an unknown prompt id or an assignment missing its columns failed only after the
    embedding and the cross-fitted models."""
    from cpo_engine.workflows.common import Representer

    def no_work(*args, **kwargs):
        raise AssertionError("embedding started before --policy was checked")

    monkeypatch.setattr(Representer, "represent", no_work)
    base = ["ope", "--data", str(grid), "--out", str(tmp_path / "o"), "--set", "embed.device=cpu"]
    _fails_cleanly(capsys, base + ["--policy", "no_such_prompt"], "no_such_prompt", "neither a file nor a logged")
    bad = tmp_path / "assignment.csv"
    bad.write_text("query_id,prompt\nq1,p1\n")
    _fails_cleanly(capsys, base + ["--policy", str(bad)], str(bad), "recommended_prompt_id")


@pytest.mark.parametrize("command", ["run", "fit", "ope", "evaluate", "nightly"])
def test_cv_larger_than_the_queries_allow_is_refused_before_any_work(capsys, tmp_path, grid, command, monkeypatch):
    """Issue 21, item 17: `causal.cv` needing more queries than the data hold failed only in the fit, after the
    embedding, and left summary.json and features/ in --out; now refused right after the data are read. `cpo
    evaluate` and `cpo nightly` too: a night refused this way is bad input (exit 2), not a failed night, and
    changes no state (no report, nothing staged or stored)."""
    from cpo_engine.workflows.common import Representer

    def no_work(*args, **kwargs):
        raise AssertionError("embedding started before causal.cv was checked against the queries")

    monkeypatch.setattr(Representer, "__init__", no_work)  # not even the encoder is loaded
    monkeypatch.setattr(Representer, "represent", no_work)
    out = tmp_path / "o"
    # 30 queries; `cpo run` and `cpo evaluate` hold 9 out (test_fraction 0.3): 16 folds x 2 queries fit neither
    n_train = {"run": 21, "fit": 30, "ope": 30, "evaluate": 21, "nightly": 30}[command]
    where = ["--state", str(out), "--new", str(grid)] if command == "nightly" else ["--data", str(grid), "--out",
                                                                                    str(out)]
    err = _fails_cleanly(capsys, [command, *where, "--cv", "16", "--set", "embed.device=cpu"],
                         "causal.cv = 16", "at least 32 distinct training queries", f"only {n_train} for training",
                         str(grid), f"to at most {n_train // 2}")
    assert "fix:" in err
    assert not any((out / name).exists() for name in ("summary.json", "features", "model", "report.html", "search",
                                                      "seeds", "points", "evaluation.json"))
    if command == "nightly":  # the state folder holds nothing but (at most) its released lock
        assert not [p for p in out.rglob("*") if not p.name.startswith(".")], sorted(out.rglob("*"))

