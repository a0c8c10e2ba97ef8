"""Inputs (triplets, trajectories), the edit prior, report files and the `cpo edits` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from cpo_engine.cli import main
from cpo_engine.edits import (
    EffectConfig,
    analyze,
    analyze_edits,
    default_prior_path,
    edit_prior,
    load_edit_prior,
    prior_weights,
    read_trajectories,
    units_from_trajectories,
    validate_edit_prior,
)
from cpo_engine.edits.simulate import PHRASES, simulate_grid
from cpo_engine.exceptions import DataError
from cpo_engine.taxonomy import EDIT_FAMILIES

EFFECTS = {"math": {"step_by_step": 0.15, "persona": -0.1}, "logic": {"step_by_step": 0.0, "persona": 0.0}}


def _trajectory(n_steps: int = 40, seed: int = 0, per_query: bool = False) -> pd.DataFrame:
    """A hill-climbing log: each step adds or removes one phrase of its parent; true effects above."""
    rng = np.random.default_rng(seed)
    rows, base = [], "Solve the problem."
    for task, eff in EFFECTS.items():
        cur: set[str] = set()
        texts = {frozenset(): base}
        rows += _rows(task, base, None, 0.4, rng, per_query)
        for _ in range(n_steps):
            fam = str(rng.choice(sorted(eff)))
            nxt = cur ^ {fam}
            text = " ".join([base] + [PHRASES[f] for f in sorted(nxt)])
            texts.setdefault(frozenset(nxt), text)
            score = 0.4 + sum(eff[f] for f in nxt)
            rows += _rows(task, text, texts[frozenset(cur)], score, rng, per_query)
            cur = nxt
    return pd.DataFrame(rows)


def _rows(task: str, text: str, parent: str | None, p: float, rng, per_query: bool) -> list[dict]:
    if not per_query:
        return [{"prompt": text, "parent": parent, "task": task, "model": "m", "score": p + rng.normal(0, 0.01)}]
    return [{"prompt": text, "parent": parent, "task": task, "model": "m", "query_id": f"q{i}",
             "score": float(rng.random() < p)} for i in range(60)]


def test_trajectory_csv_round_trip_recovers_sign(tmp_path: Path) -> None:
    path = tmp_path / "traj.csv"
    _trajectory().to_csv(path, index=False)
    traj = read_trajectories(path)
    assert {"prompt_id", "parent_id", "task", "model", "query_id", "score"} <= set(traj.columns)
    units = units_from_trajectories(traj)
    fam = analyze_edits(units, EffectConfig(cv=2, motif_top_k=0, inference="query")).families.set_index(
        ["task", "family"])
    assert fam.loc[("math", "step_by_step"), "effect"] > 0.1
    assert fam.loc[("math", "persona"), "effect"] < -0.05


def test_trajectory_without_ids_gets_the_search_candidate_ids(tmp_path: Path) -> None:
    """Edits names unnamed prompts exactly as the search does (one helper, below both rooms)."""
    from cpo_engine.search.candidates import Candidate

    path = tmp_path / "traj.csv"
    _trajectory(n_steps=3).to_csv(path, index=False)
    traj = read_trajectories(path)
    assert traj["prompt_id"].tolist() == [Candidate.seed(t).id for t in traj["prompt_text"]]


def test_edits_do_not_import_the_search() -> None:
    import subprocess
    import sys

    code = ("import sys, cpo_engine.edits, cpo_engine.edits.pairs, cpo_engine.edits.prior; "
            "print([m for m in sys.modules if m.startswith('cpo_engine.search')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_trajectory_with_per_query_scores_is_paired(tmp_path: Path) -> None:
    path = tmp_path / "traj.jsonl"
    _trajectory(n_steps=20, per_query=True).to_json(path, orient="records", lines=True)
    report, prior = analyze(path, effect_config=EffectConfig(cv=2, motif_top_k=0))
    row = report.families.set_index(["task", "family"]).loc[("math", "step_by_step")]
    assert row["n_queries"] == 60 and row["effect"] > 0
    assert validate_edit_prior(prior)["tasks"]["math"]["step_by_step"] >= 1.0


def test_trajectory_errors_name_file_column_and_fix(tmp_path: Path) -> None:
    df = _trajectory(n_steps=3)
    bad = tmp_path / "noscore.csv"
    df.drop(columns=["score"]).to_csv(bad, index=False)
    with pytest.raises(DataError, match=r"noscore\.csv.*score.*\n  fix:"):
        read_trajectories(bad)
    orphan = tmp_path / "orphan.csv"
    df.assign(parent=df["parent"].where(df["parent"].isna(), "a prompt nobody scored")).to_csv(orphan, index=False)
    with pytest.raises(DataError, match="parent not found"):
        read_trajectories(orphan)


def test_prior_is_neutral_without_evidence_and_tilts_with_it() -> None:
    fam = pd.DataFrame({"task": ["t", "t"], "family": ["step_by_step", "persona"], "status": "estimated",
                        "effect": [0.001, -0.001], "se": [0.05, 0.05]})
    doc = edit_prior(fam)
    assert doc["format"] == "cpo-edit-prior/1" and set(doc["default"]) == set(EDIT_FAMILIES)
    assert all(w == 1.0 for w in doc["tasks"]["t"].values())
    strong = fam.assign(effect=[0.2, -0.2], se=[0.01, 0.01])
    w = edit_prior(strong)["tasks"]["t"]
    assert w["step_by_step"] > 1 > w["persona"] and w["conciseness"] == 1.0
    assert prior_weights(edit_prior(strong), "unknown task") == edit_prior(strong)["default"]


@pytest.mark.parametrize(("doc", "match"), [
    ({"format": "other"}, "not an edit prior"),
    ({"format": "cpo-edit-prior/1", "default": {"politeness": 1.0}, "tasks": {}}, "unknown family"),
    ({"format": "cpo-edit-prior/1", "default": {}, "tasks": {"t": {"persona": -1}}}, "tasks.t.persona"),
])
def test_invalid_prior_documents_are_rejected(doc: dict, match: str) -> None:
    with pytest.raises(DataError, match=match):
        validate_edit_prior(doc)


def test_shipped_math_prior_is_valid() -> None:
    doc = load_edit_prior(default_prior_path("math"))
    assert {"svamp", "mawps", "gsm8k"} <= set(doc["tasks"])


def test_cli_writes_every_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "grid.parquet"
    pq.write_table(simulate_grid(EFFECTS, n_queries=60, seed=2), data)
    out = tmp_path / "out"
    assert main(["edits", "--data", str(data), "--out", str(out), "--cv", "2", "--filter", "task=math"]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"edit_effects.csv", "edit_effects.md", "edit_heatmap.png", "edit_prior.json", "summary.json",
            "surface_effects.csv", "motif_effects.csv", "heterogeneity.csv"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    table = pd.read_csv(out / "edit_effects.csv")
    assert set(table["task"]) == {"math"} and set(table["family"]) == set(EDIT_FAMILIES)
    assert (out / "edit_heatmap.png").read_bytes()[:4] == b"\x89PNG"
    assert load_edit_prior(out / "edit_prior.json")["tasks"]["math"]
    assert json.loads((out / "summary.json").read_text())["n_estimated"] >= 2
    assert "paired units" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "edits" and manifest["config"]["effects"]["cv"] == 2  # the config it ran with
    assert manifest["config"]["filter"] == ["task=math"] and manifest["config"]["pairs"]["max_edits_per_cell"] == 5000
    assert main(["edits", "--data", str(data), "--out", str(out), "--cv", "2", "--filter", "task=math"]) == 0  # rerun


def test_cli_refuses_a_run_folder_as_out_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`cpo edits --out RUN_FOLDER` overwrote the run's summary.json; a run folder (it has a manifest) is refused,
    naming a folder to use instead, and the run's files are untouched."""
    data = tmp_path / "grid.parquet"
    pq.write_table(simulate_grid(EFFECTS, n_queries=10, seed=2), data)
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"workflow": "run", "status": "ok"}))
    (run / "summary.json").write_text('{"recommendation": "the run\'s own"}')
    assert main(["edits", "--data", str(data), "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "is a `cpo run` run folder" in err and str(run / "edits") in err
    assert json.loads((run / "summary.json").read_text()) == {"recommendation": "the run's own"}
    assert sorted(p.name for p in run.iterdir()) == ["manifest.json", "summary.json"]


def test_cli_bad_input_exits_2_with_the_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "grid.parquet"
    pq.write_table(simulate_grid(EFFECTS, n_queries=10, seed=2), data)
    assert main(["edits", "--data", str(data), "--out", str(tmp_path / "o"), "--filter", "split=test"]) == 2
    assert "split" in capsys.readouterr().err


def test_search_candidates_table_reads_as_a_trajectory(tmp_path: Path) -> None:
    """The engine's search output (candidates.parquet: id, text, parent, operator, family, ...) with a
    score column chosen by name; the operator's declared family is used where the text says nothing."""
    import pyarrow as pa

    base = "Solve the problem."
    texts = [base, base + " " + PHRASES["persona"], base + " Zorp.", base + " " + PHRASES["step_by_step"]]
    table = pa.table({"id": ["s", "a", "b", "c"], "text": texts, "parent": [None, "s", "s", "s"],
                      "operator": [None, "add_persona", "recombine", "add_step_by_step"],
                      "family": [None, "persona", "recombination", "step_by_step"],
                      "static_effect": [0.0, -0.05, 0.01, 0.08]})
    pq.write_table(table, tmp_path / "candidates.parquet")
    traj = read_trajectories(tmp_path / "candidates.parquet", score_column="static_effect")
    units = units_from_trajectories(traj)
    fams = units.edits.set_index("child_id")
    assert fams.loc["b", "fam_recombination"] == 1 and fams.loc["a", "fam_persona"] == 1
    np.testing.assert_allclose(units.dy[np.argsort(units.edits["child_id"].to_numpy()[units.unit_edit])],
                               [-0.05, 0.01, 0.08])


@pytest.mark.parametrize("flag", [["--cv", "1"], ["--fdr", "1.5"], ["--temperature", "0"], ["--min-prompts", "0"]])
def test_cli_bad_settings_exit_2_naming_the_parameter(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      flag: list[str]) -> None:
    assert main(["edits", "--data", "x.parquet", "--out", str(tmp_path), *flag]) == 2
    assert flag[0][2:].replace("-", "_") in capsys.readouterr().err
