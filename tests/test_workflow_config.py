"""One configuration per concern: every workflow composes the same dataclasses, so defaults cannot
drift, and every CLI flag is sugar for a --set key (precedence: defaults < file < --set < flags)."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields

import pytest

from cpo_engine.cli import build_parser, main
from cpo_engine.commands import config_from_args
from cpo_engine.workflows.config import (EvaluateConfig, FitConfig, NightlyConfig, OptimizeConfig, RunConfig)


def test_run_nightly_and_the_library_share_causal_and_selection_defaults():
    from cpo_engine.causal import CausalRewardModel
    from cpo_engine.search import CandidateScorer, SelectionConfig

    run, nightly = RunConfig(), NightlyConfig()
    assert nightly.causal == run.causal == FitConfig().causal == EvaluateConfig().causal
    assert nightly.selection == run.selection == OptimizeConfig().selection
    assert run.beam == OptimizeConfig().beam
    model = CausalRewardModel()  # the Python API fits what the pipeline fits
    assert model.final_alpha == run.causal.final_alpha and model.featurizer == run.causal.featurizer
    import inspect

    assert inspect.signature(CandidateScorer).parameters["z"].default == SelectionConfig().z


def _parse(argv: list[str]) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if getattr(args, "data_pos", None) and args.data is None:
        args.data = args.data_pos
    return args


@pytest.mark.parametrize("command,cls", [("fit", FitConfig), ("evaluate", EvaluateConfig),
                                         ("optimize", OptimizeConfig), ("run", RunConfig)])
def test_set_reaches_every_workflow_and_flags_win(command, cls, tmp_path):
    cfg_file = tmp_path / "c.json"
    cfg_file.write_text(json.dumps({"embed": {"batch_size": 7}}))
    argv = [command, "--config", str(cfg_file), "--set", "embed.batch_size=9", "--set", "seed=4" if command != "evaluate"
            else "evaluation.seeds=4", "--set", "pca.prompt_components=3" if command != "optimize" else "beam.top_k=3"]
    cfg = config_from_args(_parse(argv), cls)
    assert cfg.embed.batch_size == 9  # --set beats the file
    if command == "evaluate":
        assert cfg.evaluation.seeds == 4 and cfg.pca.prompt_components == 3  # evaluate no longer overwrites it
    elif command == "optimize":
        assert cfg.seed == 4 and cfg.beam.top_k == 3
    else:
        assert cfg.seed == 4 and cfg.pca.prompt_components == 3
    if hasattr(cls, "causal") or "causal" in {f.name for f in fields(cls)}:
        flagged = config_from_args(_parse([command, "--set", "causal.cv=4", "--cv", "3"]), cls)
        assert flagged.causal.cv == 3  # the flag beats --set
        assert config_from_args(_parse([command, "--set", "causal.cv=4"]), cls).causal.cv == 4


def test_optimize_selection_flags_and_set_agree():
    a = config_from_args(_parse(["optimize", "--set", "selection.z=0.5", "--set", "beam.rounds=1"]), OptimizeConfig)
    b = config_from_args(_parse(["optimize", "--z", "0.5", "--rounds", "1"]), OptimizeConfig)
    assert a == b and a.selection.z == 0.5 and a.beam.rounds == 1


def test_help_states_the_precedence(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps the help
    assert "defaults < --config FILE < --set" in out and "[--set causal.model_y]" in out


def test_a_typo_in_a_nuisance_fails_before_anything_runs(tmp_path, capsys):
    out = tmp_path / "run"
    cache = tmp_path / "cache"
    for argv in (["run", "--model-y", "rdige"], ["run", "--set", "causal.model_t=mpl"], ["fit", "--model-y", "hbg"]):
        assert main([*argv, "--out", str(out), "--set", f"embed.cache_dir={cache}"]) == 2
        err = capsys.readouterr().err
        assert "did you mean" in err and "Traceback" not in err
    assert not out.exists() and not cache.exists()  # nothing embedded, no run folder started


def test_import_sets_no_environment_variable():
    import subprocess
    import sys

    code = ("import os; before = dict(os.environ); import cpo_engine, cpo_engine.workflows, cpo_engine.causal; "
            "import cpo_engine.search, cpo_engine.embedding; print(sorted(set(os.environ) - set(before)))")
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("HF_HUB_OFFLINE", "OMP_WAIT_POLICY",
                                                                          "TRANSFORMERS_OFFLINE")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"
