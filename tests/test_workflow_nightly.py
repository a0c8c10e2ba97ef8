"""Nightly re-optimization on seeded triplets with known prompt effects (real query and prompt texts
from the bundled example, real MiniLM embeddings): a stable night shows no drift, a night whose
prompt effects are reversed is flagged, a fit that fails the gate keeps the previous model live,
embeddings are reused from the state's cache; a failed night leaves the live run byte-identical and
exits non-zero, a reworded query_id is refused, --fail-on-drift keeps the live model, and a new
prompt goes live only on a measured win (the replay backend serves the recorded outcomes)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cpo_engine.causal import CausalConfig
from cpo_engine.exceptions import DataError
from cpo_engine.search.config import ProposerConfig
from cpo_engine.workflows.common import Representer
from cpo_engine.workflows.config import DriftConfig, GateConfig, LLMConfig, NightlyConfig, VerifyConfig
from cpo_engine.workflows.nightly import above, below, run_nightly

pytestmark = pytest.mark.slow
N_QUERIES = 60


@pytest.fixture(scope="module")
def texts():
    from cpo_engine.data import load_example

    t = load_example()
    q = list(dict.fromkeys(zip(t["query_id"].to_pylist(), t["query_text"].to_pylist())))[:N_QUERIES]
    p = list(dict.fromkeys(zip(t["prompt_id"].to_pylist(), t["prompt_text"].to_pylist())))
    return q, p


def _night(texts, path: Path, seed: int, sign: float, constant: float | None = None) -> Path:
    """Full grid, 2 samples per cell: P(correct) = sigmoid(a_q + sign * b_p) with fixed b (or a constant score)."""
    queries, prompts = texts
    a = np.random.default_rng(0).normal(0, 1, len(queries))
    b = np.linspace(-2.0, 2.0, len(prompts))
    rng = np.random.default_rng(seed)
    rows = []
    for i, (qid, qt) in enumerate(queries):
        for j, (pid, pt) in enumerate(prompts):
            prob = 1 / (1 + np.exp(-(a[i] + sign * b[j])))
            for s in range(2):
                score = constant if constant is not None else float(rng.random() < prob)
                rows.append({"query_id": qid, "query_text": qt, "prompt_id": pid, "prompt_text": pt,
                             "score": score, "sample": s, "gold_answer": "0"})
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _cfg(state: Path, new: Path, date: str, **kw) -> NightlyConfig:
    kw.setdefault("proposer", ProposerConfig(kind="none"))
    cfg = NightlyConfig(state=str(state), new=str(new), date=date, window_days=1, causal=CausalConfig(cv=3), **kw)
    cfg.pca.query_components, cfg.pca.prompt_components = 4, 4
    cfg.embed.device = "cpu"
    return cfg


def _rep(state: Path, encoder) -> Representer:
    return Representer(NightlyConfig().embed, cache_dir=state / "cache", encoder=encoder)


def _tree(folder: Path) -> dict[str, str]:
    """sha256 of every file under a folder (byte-identity of the live run)."""
    return {str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(folder.rglob("*")) if f.is_file()}


@pytest.mark.timeout(600)
def test_nightly_flags_injected_drift_and_keeps_the_previous_model(texts, tmp_path, encoder):
    state = tmp_path / "state"
    r1 = run_nightly(_cfg(state, _night(texts, tmp_path / "d1.parquet", 1, +1), "2026-01-01"), representer=_rep(state, encoder))
    assert r1.model_status == "updated" and r1.comparison is None
    from cpo_engine.workflows.common import read_kind

    assert read_kind(state / "runs" / "2026-01-01") == "nightly" and r1.report_path.name == "report.json"
    shards = sorted((state / "cache").rglob("*.parquet"))

    r2 = run_nightly(_cfg(state, _night(texts, tmp_path / "d2.parquet", 2, +1), "2026-01-02"), representer=_rep(state, encoder))
    c2 = r2.comparison
    assert r2.model_status == "updated" and not c2["drift"], c2
    assert c2["kendall_tau"] > 0.7 and c2["common_queries"] == N_QUERIES
    assert sorted((state / "cache").rglob("*.parquet")) == shards  # same texts: nothing re-embedded

    r3 = run_nightly(_cfg(state, _night(texts, tmp_path / "d3.parquet", 3, -1), "2026-01-03"), representer=_rep(state, encoder))
    c3 = r3.comparison
    assert c3["drift"] and c3["kendall_tau"] < 0 and any("Kendall tau" in r for r in c3["drift_reasons"])
    assert json.loads((state / "current.json").read_text())["date"] == "2026-01-03"
    # without an LLM nothing new goes live, and the report says why
    assert r3.promotion["status"] == "kept" and "no generation backend" in r3.promotion["reason"]
    assert not (state / "live.json").exists()

    cfg = _cfg(state, _night(texts, tmp_path / "d4.parquet", 4, +1), "2026-01-04")
    cfg.gate = GateConfig(min_ess_share=1.01)  # no fit can pass: the live model must stay
    r4 = run_nightly(cfg, representer=_rep(state, encoder))
    assert r4.model_status == "kept_previous" and r4.live_run == "runs/2026-01-03"
    assert "effective sample share" in r4.gate_problems[0]
    assert json.loads((state / "current.json").read_text())["date"] == "2026-01-03"
    assert not (state / "runs" / "2026-01-04" / "model").exists()
    assert json.loads((state / "runs" / "2026-01-04" / "report.json").read_text())["model_status"] == "kept_previous"
    assert len(list((state / "triplets").glob("*.parquet"))) == 3  # a failed night stores no triplets


@pytest.mark.timeout(600)
def test_failed_night_on_the_live_date_keeps_the_live_run_byte_identical(texts, tmp_path, encoder, capsys):
    """Issue 12: a bad file on the live date replaced the live run's training rows and report and exited 0."""
    from cpo_engine.cli import main

    state = tmp_path / "state"
    run_nightly(_cfg(state, _night(texts, tmp_path / "d1.parquet", 1, +1), "2026-01-01"), representer=_rep(state, encoder))
    before = _tree(state / "runs" / "2026-01-01") | {"triplets": _tree(state / "triplets")["2026-01-01.parquet"],
                                                     "current": (state / "current.json").read_text()}
    bad = _night(texts, tmp_path / "bad.parquet", 9, +1, constant=1.0)  # constant scores: nothing to fit
    code = main(["nightly", "--state", str(state), "--new", str(bad), "--date", "2026-01-01", "--window-days", "1",
                 "--cv", "3", "--proposer", "none", "--set", "pca.query_components=4",
                 "--set", "pca.prompt_components=4", "--set", "embed.device=cpu"])
    out, err = capsys.readouterr()
    assert code == 4, out + err
    assert "Traceback" not in out + err
    after = _tree(state / "runs" / "2026-01-01") | {"triplets": _tree(state / "triplets")["2026-01-01.parquet"],
                                                    "current": (state / "current.json").read_text()}
    assert after == before
    failed = json.loads((state / "runs" / "2026-01-01-1" / "report.json").read_text())  # beside, never in, the live run
    assert failed["model_status"] == "kept_previous" and "Y is constant" in failed["gate_problems"][0]


@pytest.mark.timeout(600)
def test_reworded_query_id_on_a_later_day_is_refused(texts, tmp_path, encoder):
    state = tmp_path / "state"
    run_nightly(_cfg(state, _night(texts, tmp_path / "d1.parquet", 1, +1), "2026-01-01"), representer=_rep(state, encoder))
    path = _night(texts, tmp_path / "d2.parquet", 2, +1)
    t = pq.read_table(path)
    first = t["query_text"][0].as_py()
    qt = [("Reworded: " + x) if q == t["query_id"][0].as_py() else x
          for q, x in zip(t["query_id"].to_pylist(), t["query_text"].to_pylist())]
    pq.write_table(t.set_column(t.schema.get_field_index("query_text"), "query_text", pa.array(qt)), path)
    with pytest.raises(DataError) as exc:
        run_nightly(_cfg(state, path, "2026-01-02"), representer=_rep(state, encoder))
    msg = str(exc.value)
    assert first in msg and "Reworded: " + first in msg and "2026-01-01" in msg and "2026-01-02" in msg
    assert not (state / "triplets" / "2026-01-02.parquet").exists() and not (state / "runs" / "2026-01-02").exists()


@pytest.mark.timeout(600)
def test_fail_on_drift_keeps_the_live_model(texts, tmp_path, encoder):
    state = tmp_path / "state"
    run_nightly(_cfg(state, _night(texts, tmp_path / "d1.parquet", 1, +1), "2026-01-01"), representer=_rep(state, encoder))
    live = (state / "current.json").read_text()
    r = run_nightly(_cfg(state, _night(texts, tmp_path / "d2.parquet", 2, -1), "2026-01-02",
                         drift=DriftConfig(fail_on_drift=True)), representer=_rep(state, encoder))
    assert r.comparison["drift"] and r.model_status == "drift_blocked"
    assert (state / "current.json").read_text() == live and r.live_run == "runs/2026-01-01"


def test_threshold_texts_agree_with_the_verdict():
    """Issue 12: 'Kendall tau 0.500 < 0.5' printed for a tau just under 0.5."""
    for value, threshold in ((0.49996, 0.5), (0.4999999, 0.5), (0.1, 0.5), (0.2999, 0.3)):
        text = below("Kendall tau", value, threshold)
        a, b = map(float, re.findall(r"(-?\d+\.?\d*(?:e-?\d+)?)", text)[:2])
        assert a < b, text
    text = above("queries that changed prompt", 0.30004, 0.3, percent=True)
    a, b = map(float, re.findall(r"(\d+\.?\d*)%", text))
    assert a > b, text


@pytest.mark.timeout(900)
def test_a_new_prompt_goes_live_only_on_a_measured_win(texts, tmp_path, encoder):
    """Replay backend (recorded outcomes of each night's grid): night 1 makes the incumbent live, night 2
    (prompt effects reversed) promotes a measured winner, night 3 with an unreachable margin keeps it."""
    state = tmp_path / "state"

    def cfg(path: Path, date: str, margin: float = 0.0) -> NightlyConfig:
        llm = LLMConfig()
        llm.backend.kind, llm.backend.replay.path = "replay", str(path)
        return _cfg(state, path, date, generation=llm, verify=VerifyConfig(max_queries=30, seeds="all", margin=margin),
                    drift=DriftConfig(min_kendall_tau=-1.0, max_changed_share=1.0, max_uplift_change=10.0))

    d1 = _night(texts, tmp_path / "d1.parquet", 1, +1)
    r1 = run_nightly(cfg(d1, "2026-01-01"), representer=_rep(state, encoder))
    p1 = r1.promotion
    assert p1["status"] in ("initial", "promoted") and p1["verification"]["arms"][0]["role"] == "incumbent"
    assert all(a["uplift_vs_baseline"]["kind"] == "measured" for a in p1["verification"]["arms"][1:])
    assert (state / "triplets" / "verified" / "2026-01-01.parquet").is_file()
    live1 = json.loads((state / "live.json").read_text())

    d2 = _night(texts, tmp_path / "d2.parquet", 2, -1)  # the live prompt is now among the worst
    r2 = run_nightly(cfg(d2, "2026-01-02"), representer=_rep(state, encoder))
    p2 = r2.promotion
    assert p2["verification"]["arms"][0]["role"] == "live" and p2["verification"]["arms"][0]["id"] == live1["id"]
    assert p2["status"] == "promoted", p2["reason"]
    live2 = json.loads((state / "live.json").read_text())
    assert live2 != live1 and live2["measured_uplift"]["ci_low"] >= 0 and live2["measured_uplift"]["value"] > 0

    d3 = _night(texts, tmp_path / "d3.parquet", 3, +1)  # a winner exists again, but no bound can reach 1.01
    before = (state / "live.json").read_bytes()
    r3 = run_nightly(cfg(d3, "2026-01-03", margin=1.01), representer=_rep(state, encoder))
    assert r3.promotion["status"] == "kept" and "margin 1.01" in r3.promotion["reason"]
    assert (state / "live.json").read_bytes() == before
    assert r3.model_status == "updated"  # the model is refreshed; what is served is not


def test_a_column_stored_as_numbers_one_night_and_text_another_still_merges(tmp_path):
    """After one verified night (gold answers written as numbers by the task) every later night crashed on
    "Field gold_answer has incompatible types: double vs string"; now the column reads as text everywhere."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cpo_engine.workflows.nightly import load_window

    (tmp_path / "triplets" / "verified").mkdir(parents=True)
    base = {"query_id": ["q1", "q2"], "query_text": ["1+1?", "2+2?"], "prompt_id": ["p", "p"],
            "prompt_text": ["Answer:", "Answer:"], "score": [1.0, 0.0]}
    pq.write_table(pa.table(base | {"gold_answer": ["2", "4"]}), tmp_path / "triplets" / "2026-12-01.parquet")
    pq.write_table(pa.table(base | {"gold_answer": [2.0, 4.5]}), tmp_path / "triplets" / "verified" / "2026-12-01.parquet")
    pq.write_table(pa.table(base | {"gold_answer": [2, 4]}), tmp_path / "triplets" / "2026-12-02.parquet")
    table, dates = load_window(tmp_path, None)
    assert dates == ["2026-12-01", "2026-12-02"] and table.num_rows == 6
    assert table.schema.field("gold_answer").type == pa.string()
    assert table.column("gold_answer").to_pylist() == ["2", "4", "2", "4.5", "2", "4"]


def test_damaged_state_files_are_named_not_tracebacks(tmp_path):
    """A corrupt current.json, live.json or stored day crashed `cpo nightly` without naming the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cpo_engine.exceptions import DataError
    from cpo_engine.workflows.nightly import load_window, read_json

    (tmp_path / "current.json").write_text('{"date": "2026-12-01", "run": ')
    with pytest.raises(DataError, match="not valid JSON") as exc:
        read_json(tmp_path / "current.json")
    assert str(tmp_path / "current.json") in str(exc.value) and "fix" in str(exc.value)
    (tmp_path / "live.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="JSON object"):
        read_json(tmp_path / "live.json")
    assert read_json(tmp_path / "absent.json") == {}
    (tmp_path / "triplets").mkdir()
    pq.write_table(pa.table({"query_id": ["q"], "score": [1.0]}), tmp_path / "triplets" / "2026-12-01.parquet")
    (tmp_path / "triplets" / "2026-12-02.parquet").write_bytes(b"PAR1 cut short")
    with pytest.raises(DataError, match="cannot be read") as exc:
        load_window(tmp_path, None)
    assert "2026-12-02.parquet" in str(exc.value)


@pytest.mark.timeout(600)
def test_a_night_that_fails_after_its_fit_changes_no_stored_day(texts, tmp_path, encoder, monkeypatch):
    """A failed rerun of the live date overwrote triplets/<live date>.parquet before verification (80 queries'
    rows lost) and a failed night's rows entered the next fit. A night is one transaction: here it fails in
    search/verification, after its fit, and the stored triplets and current.json are exactly as before."""
    import cpo_engine.workflows.nightly_promote as promote

    state = tmp_path / "state"
    run_nightly(_cfg(state, _night(texts, tmp_path / "d1.parquet", 1, +1), "2026-01-01"), representer=_rep(state, encoder))
    before = _tree(state / "triplets") | {"current": (state / "current.json").read_text()}

    def boom(*args, **kwargs):
        raise RuntimeError("the LLM server went away during verification")

    monkeypatch.setattr(promote, "search_and_promote", boom)
    for date in ("2026-01-01", "2026-01-02"):  # the live date's rerun, and a new date
        with pytest.raises(RuntimeError, match="went away"):
            run_nightly(_cfg(state, _night(texts, tmp_path / f"n{date}.parquet", 5, +1), date),
                        representer=_rep(state, encoder))
        assert _tree(state / "triplets") | {"current": (state / "current.json").read_text()} == before
