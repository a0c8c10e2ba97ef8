"""A new user's path, end to end on real data: `cpo run --data logs` prints one command, which assigns
prompts to a file of unscored queries; the same in Python in three lines; and the Ray Data path."""

from __future__ import annotations

import shlex
import stat

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from cpo_engine.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_dir(small_example, tmp_path_factory):
    import contextlib
    import io

    from unittest import mock

    import sentence_transformers

    root = tmp_path_factory.mktemp("e2e")
    out = io.StringIO()
    loads = []
    real = sentence_transformers.SentenceTransformer

    def counting(*args, **kwargs):
        loads.append(args)
        return real(*args, **kwargs)

    with contextlib.redirect_stdout(out), mock.patch.object(sentence_transformers, "SentenceTransformer", counting):
        assert main(["--quiet", "run", "--data", str(small_example), "--out", str(root / "run"), "--proposer", "edit",
                     "--rounds", "1", "--children", "4", "--z", "0", "--set", f"embed.cache_dir={root / 'cache'}",
                     "--set", "embed.device=cpu",
                     "--set", "policy.fallback=false"]) == 0  # 80 queries are too few: keep the per-query choice
    assert len(loads) == 1  # one encoder per run: the table's texts, then the searched candidates
    return root / "run", out.getvalue(), root / "cache"


@pytest.fixture(scope="module")
def new_queries(small_example, tmp_path_factory):
    """Unscored queries: ids and texts only (no prompt, no score), as CSV."""
    import pyarrow.csv as pacsv

    t = pq.read_table(small_example, columns=["query_id", "query_text"])
    t = t.group_by(["query_id", "query_text"]).aggregate([])
    path = tmp_path_factory.mktemp("q") / "new_queries.csv"
    pacsv.write_csv(t, path)
    return path, t.num_rows


def test_run_prints_the_command_that_assigns_new_queries(run_dir, new_queries, tmp_path, capsys):
    run, stdout, cache = run_dir
    queries, n = new_queries
    printed = [line.strip() for line in stdout.splitlines() if line.strip().startswith("cpo assign")]
    assert len(printed) == 1 and f"--model {run}" in printed[0]
    argv = shlex.split(printed[0].replace("NEW_QUERIES.parquet", str(queries))
                       .replace("assignments.parquet", str(tmp_path / "a.parquet")))[1:]
    assert main(argv + ["--set", f"embed.cache_dir={cache}", "--set", "embed.device=cpu"]) == 0
    got = pq.read_table(tmp_path / "a.parquet")
    assert got.num_rows == n and set(got.column("query_id").to_pylist()) == set(
        pacsv_ids(queries)) and got.column("verified").to_pylist() == [True] * n
    assert f"assigned {n} queries" in capsys.readouterr().out


def pacsv_ids(path):
    import pyarrow.csv as pacsv

    return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types={"query_id": pa.string()}))[
        "query_id"].to_pylist()


def test_python_api_in_three_lines_matches_the_run(run_dir, small_example):
    run, _, cache = run_dir
    from cpo_engine import Policy
    from cpo_engine.embedding.config import EmbedConfig
    from cpo_engine.workflows.config import PolicyConfig

    with pytest.warns(UserWarning, match="too small"):
        policy = Policy.load(run, PolicyConfig(fallback=False), embed=EmbedConfig(cache_dir=str(cache), device="cpu"))
    table = pq.read_table(small_example, columns=["query_id", "query_text"]).group_by(
        ["query_id", "query_text"]).aggregate([])
    out = policy.assign(table)
    # the run's own assignment of the same queries is the same policy applied to the same texts
    run_assign = pq.read_table(run / "search" / "assignment.parquet")
    expect = dict(zip(run_assign.column("query_id").to_pylist(),
                      run_assign.column("recommended_prompt_id").to_pylist()))
    assert {q: p for q, p in zip(out.column("query_id").to_pylist(), out.column("recommended_prompt_id").to_pylist())} \
        == expect
    assert len(set(expect.values())) > 1  # a per-query choice, not one prompt everywhere
    assert "Policy(" in repr(policy) and run.name in repr(policy)


def test_run_outputs_are_readable_by_others_and_the_report_is_self_contained(run_dir):
    run, _, _ = run_dir
    files = [p for p in run.rglob("*") if p.is_file()]
    assert files and all(p.stat().st_mode & stat.S_IRGRP for p in files), [
        (p, oct(p.stat().st_mode)) for p in files if not p.stat().st_mode & stat.S_IRGRP]
    page = (run / "report.html").read_text()
    assert "id='recommendation'" in page and "src='plots/" not in page and "data:image/png;base64" in page
    assert page.index("id='recommendation'") < page.index("id='prompts'")  # the answer comes first


@pytest.mark.ray
def test_assign_on_ray_data_matches_the_local_path(run_dir, new_queries, tmp_path):
    import ray

    from cpo_engine.embedding.config import EmbedConfig
    from cpo_engine.workflows.assign import assign
    from cpo_engine.workflows.config import AssignConfig, AssignRayConfig, PolicyConfig

    run, _, cache = run_dir
    queries, n = new_queries
    embed, policy = EmbedConfig(cache_dir=str(cache), device="cpu", num_threads=1), PolicyConfig(fallback=False)
    local = assign(AssignConfig(model=str(run), queries=str(queries), out=str(tmp_path / "local.parquet"),
                                batch_size=32, embed=embed, policy=policy))
    ray.init(num_cpus=4, include_dashboard=False, object_store_memory=512 * 2**20, log_to_driver=False)
    try:
        res = assign(AssignConfig(model=str(run), queries=str(queries), out=str(tmp_path / "ray_out"), batch_size=32,
                                  executor="ray", embed=embed, policy=policy,
                                  ray=AssignRayConfig(num_actors=1, cpus_per_actor=0.5, gpus_per_actor=0)))
    finally:
        ray.shutdown()
    got = pq.read_table(tmp_path / "ray_out").sort_by("query_id")
    want = pq.read_table(tmp_path / "local.parquet").sort_by("query_id")
    assert res.n_queries == n == got.num_rows and res.prompt_counts == local.prompt_counts
    assert len(res.prompt_counts) > 1
    assert got.column("recommended_prompt_id").equals(want.column("recommended_prompt_id"))
    assert pc.max(pc.abs(pc.subtract(got["effect"], want["effect"]))).as_py() < 1e-9


def _bundle_on_a_changed_encoder(run_dir, tmp_path):
    """A copy of the run whose bundle.json names another encoder folder: the packaged MiniLM with one config file
    changed (the same name, other weights or config, as after an upgrade of the files behind a path)."""
    import json
    import shutil

    from cpo_engine.embedding.encoders import packaged_minilm_path
    from cpo_engine.policy.bundle import write_info

    run, _, _ = run_dir
    moved = tmp_path / "run"
    shutil.copytree(run, moved)
    other = tmp_path / "minilm-changed"
    shutil.copytree(packaged_minilm_path(), other)
    cfg = other / "config_sentence_transformers.json"
    cfg.write_text(json.dumps(json.loads(cfg.read_text()) | {"note": "another revision"}))
    info = json.loads((moved / "model" / "bundle.json").read_text())
    info["embed"]["encoder"] = str(other)
    write_info(moved / "model", info)  # with its hash: the bundle names the folder, the files behind it changed
    return moved


def test_assign_refuses_an_encoder_that_is_not_the_fitted_one(run_dir, new_queries, tmp_path, capsys):
    """bundle.json names another encoder folder (here the packaged MiniLM with one config file changed: the same
    name, other weights or config, as after an upgrade of the files behind a path): `cpo assign` and
    Policy.load refuse it by its identity, before writing anything, instead of serving vectors from another
    space (45 of 50 recommendations changed silently before)."""
    from cpo_engine import Policy
    from cpo_engine.embedding.config import EmbedConfig
    from cpo_engine.exceptions import ConfigError

    _, _, cache = run_dir
    queries, _ = new_queries
    moved = _bundle_on_a_changed_encoder(run_dir, tmp_path)
    out = tmp_path / "a.parquet"
    argv = ["assign", "--model", str(moved), "--queries", str(queries), "--out", str(out),
            "--set", f"embed.cache_dir={cache}", "--set", "embed.device=cpu"]
    assert main(argv) == 2
    assert "is not the one the model bundle" in capsys.readouterr().err and not out.exists()
    assert not list(tmp_path.glob(".a.parquet*"))
    policy = Policy.load(moved, embed=EmbedConfig(cache_dir=str(cache), device="cpu"), warn=False)
    with pytest.raises(ConfigError, match="is not the one the model bundle"):
        policy.assign(["What is 2 plus 2?"])


def test_ope_refuses_an_encoder_that_is_not_the_fitted_one(run_dir, small_example, tmp_path, capsys, monkeypatch):
    """`cpo ope --model RUN` built its embedder from the bundle's embed settings without the identity check of
    `cpo assign` / `cpo optimize`: with other files behind the bundle's encoder name it embedded the logs with
    other weights and valued the policies in another space, silently. Now refused before anything is embedded
    or written."""
    from cpo_engine.workflows.common import Representer

    def no_work(*args, **kwargs):
        raise AssertionError("the logs were embedded with an encoder that is not the bundle's")

    monkeypatch.setattr(Representer, "represent", no_work)
    _, _, cache = run_dir
    moved = _bundle_on_a_changed_encoder(run_dir, tmp_path)
    out = tmp_path / "ope"
    argv = ["ope", "--data", str(small_example), "--model", str(moved), "--policy", "CoT", "--out", str(out),
            "--cv", "3", "--set", f"embed.cache_dir={cache}", "--set", "embed.device=cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "is not the one the model bundle" in err and "fix:" in err and "Traceback" not in err
    assert not (out / "ope.json").exists() and not (out / "ope.md").exists()
