"""CLI smoke tests on the bundled data and config handling."""

from __future__ import annotations

import json

import pytest

from cpo_engine.cli import build_parser, main
from cpo_engine.config import load_config
from cpo_engine.workflows.config import RunConfig
from cpo_engine.exceptions import ConfigError


def test_help_everywhere(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in sub.choices:
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0
        assert "usage: cpo" in capsys.readouterr().out


def test_config_file_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("embed:\n  batch_size: 16\npca:\n  query_components: 0.9\n")
    cfg = load_config(RunConfig, path, ["embed.batch_size=8", "data.tasks=[mawps]", "seed=3"])
    assert isinstance(cfg, RunConfig)
    assert (cfg.embed.batch_size, cfg.pca.query_components, cfg.data.tasks, cfg.seed) == (8, 0.9, ["mawps"], 3)


@pytest.mark.parametrize("override,message", [
    ("embed.batchsize=8", "did you mean 'batch_size'"),
    ("embed.batch_size=big", "embed.batch_size must be int"),
    ("nonsense", "must look like section.key=value"),
    ("beam.top_k=0", "beam.top_k must be >= 1"),  # caught when read, before any fit
    ("causal.model_y=rigde", "did you mean 'ridge'"),
])
def test_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(RunConfig, None, [override])


def test_cli_reports_config_error_without_traceback(capsys):
    assert main(["run", "--set", "pca.query_component=3"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'query_components'" in err and "Traceback" not in err


def test_embed_cli(small_example, tmp_path, capsys):
    args = ["embed", str(small_example), "--out", str(tmp_path / "feat"),
            "--set", f"embed.cache_dir={tmp_path / 'cache'}", "--set", "embed.device=cpu"]
    assert main(args) == 0
    assert "0 hits" in capsys.readouterr().out
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "0 misses" in out and (tmp_path / "feat" / "query_pca.safetensors").exists()
    manifest = json.loads((tmp_path / "feat" / "manifest.json").read_text())
    assert manifest["kind"] == "embed" and manifest["outputs"]["query_pca"] == "query_pca.safetensors"


@pytest.mark.slow
def test_run_smoke(small_example, tmp_path):
    out = tmp_path / "run"
    assert main(["run", "--data", str(small_example), "--out", str(out),
                 "--set", f"embed.cache_dir={tmp_path / 'cache'}"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "ok" and manifest["data"]["bundled_example"] is False
    assert len(manifest["data"]["sha256"]) == 64 and "torch" in manifest["versions"]
    assert {"data", "embed_pca"} <= set(manifest["timings_s"])
    for rel in manifest["outputs"].values():
        assert (out / rel).exists()
    assert "r2_y" in manifest["search"]["causal_diagnostics"]
    assert (out / "model" / "bundle.json").is_file() and manifest["outputs"]["model"] == "model"
    assert "Causal model diagnostics" in (out / "report.html").read_text()
    # the run folder is a model bundle for every downstream command
    opt = tmp_path / "opt"
    assert main(["optimize", str(small_example), "--model", str(out), "--out", str(opt), "--mode", "pool",
                 "--set", f"embed.cache_dir={tmp_path / 'cache'}"]) == 0
    import pyarrow.parquet as pq

    assert pq.read_table(opt / "assignment.parquet").num_rows == 80  # one row per query of the table


def test_dict_fields_from_overrides():
    from dataclasses import dataclass, field

    from cpo_engine.config import from_dict

    @dataclass
    class Sampling:
        extra: dict = field(default_factory=dict)

    assert from_dict(Sampling, {"extra": {"min_p": 0.1}}).extra == {"min_p": 0.1}
