"""`cpo edits` has the shape of every command: its flags are keys of `EditsJobConfig` (whose sections are the edit
analysis's own `PairConfig`, `EffectConfig`, `PriorConfig`), read from a module light enough for the CLI."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cpo_engine.cli import build_parser, main
from cpo_engine.commands import apply_positional_data, config_from_args
from cpo_engine.exceptions import ConfigError
from cpo_engine.settings import EditsJobConfig


def _config(*argv: str) -> EditsJobConfig:
    """The config `cpo edits ARGV` runs with (as its run() reads it)."""
    args = build_parser().parse_args(["edits", *argv])
    apply_positional_data(args)
    return config_from_args(args)


def test_the_edit_settings_import_without_pandas() -> None:
    code = ("import sys, cpo_engine.edits.config as c; c.PairConfig(); c.EffectConfig(); c.PriorConfig(); "
            "print([m for m in ('pandas', 'numpy', 'pyarrow', 'cpo_engine.edits.pairs') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    from cpo_engine.edits import EffectConfig, PairConfig, PriorConfig
    from cpo_engine.edits.analysis import EffectConfig as E
    from cpo_engine.edits.pairs import PairConfig as P
    from cpo_engine.edits.prior import PriorConfig as Q

    assert (E, P, Q) == (EffectConfig, PairConfig, PriorConfig)  # the old imports still work


def test_flags_set_the_sections_and_unset_flags_leave_the_defaults() -> None:
    cfg = _config("grid.parquet", "--out", "o", "--max-edits-per-cell", "0", "--pool-models", "--temperature", "0.1",
                  "--seed", "3", "--filter", "task=a,b", "--filter", "model=m", "--cv", "3", "--learner", "hgb",
                  "--inference", "query", "--pairs", "lineage", "--kind", "triplets", "--score-column", "acc")
    assert (cfg.data, cfg.out, cfg.kind, cfg.score_column) == ("grid.parquet", "o", "triplets", "acc")
    assert cfg.pairs.max_edits_per_cell is None and cfg.pairs.pairs == "lineage"  # 0 = no cap
    assert (cfg.effects.by_model, cfg.effects.cv, cfg.effects.learner, cfg.effects.inference) == (False, 3, "hgb", "query")
    assert cfg.prior.temperature == 0.1
    assert cfg.pairs.seed == cfg.effects.random_state == 3
    assert cfg.filters() == {"task": ["a", "b"], "model": ["m"]}
    default = _config("--out", "o")
    assert default.data is None and default.pairs.max_edits_per_cell == 5000 and default.effects.by_model is True
    assert default.pairs.seed == default.effects.random_state == 0 and default.filters() == {}
    # --set reaches the keys no flag has, and a list from --set is split at its commas
    cfg = _config("--set", "pairs.seed=5", "--set", "effects.motif_top_k=0", "--set", "filter=task=a,b")
    assert (cfg.pairs.seed, cfg.effects.random_state, cfg.effects.motif_top_k) == (5, 0, 0)
    assert cfg.filters() == {"task": ["a", "b"]}


@pytest.mark.parametrize("argv, message", [
    (["--filter", "task"], "filter expects COL=V1,V2"),
    (["--filter", "=a"], "filter expects COL=V1,V2"),
    (["--set", "pairs.families_from=text"], "families_from"),
    (["--set", "effects.fdr=2"], "fdr"),
    (["--set", "effects.cvv=2"], "did you mean 'cv'"),
])
def test_bad_settings_are_refused_when_read(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _config("--out", "o", *argv)


def test_missing_data_or_out_exit_2_naming_the_flag(tmp_path, capsys) -> None:
    assert main(["edits", "--out", str(tmp_path / "o")]) == 2
    assert "pass --data PATH" in capsys.readouterr().err
    assert main(["edits", str(tmp_path / "grid.parquet")]) == 2
    assert "pass --out DIR" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
