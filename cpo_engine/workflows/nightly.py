"""Nightly re-optimization: refit on the day's triplets, search, verify, promote only what was measured.

State folder layout (everything written atomically)::

    triplets/<date>.parquet          the triplets of each date (written only after the night's fit passed)
    triplets/verified/<date>.parquet the triplets the LLM produced while verifying that night
    cache/                           embedding cache: only texts never seen before are embedded
    runs/<date>/model/               the night's model bundle (model + both PCAs)
    runs/<date>/assignment.parquet   per-query chosen logged prompt, predicted effect and se
    runs/<date>/prompts.parquet      static (mean over queries) predicted effect of each logged prompt
    runs/<date>/candidates.parquet   the generative search's candidates (predicted, in the trust region or not)
    runs/<date>/verify/              the verification (when a generation backend is configured)
    runs/<date>/report.json          diagnostics, gate verdict, drift, verification, promotion, why
    current.json                     the live model run; moved only by a fit that passed gate and drift rules
    live.json                        the live prompt or per-query policy; moved only by a measured win
    commit.json                      only while a night commits: its staged files and the new current.json

A night never writes into the live run's folder: a rerun of the live date goes to ``runs/<date>-N``,
so the live run stays byte-identical whatever happens. The day's triplets are written only once
the night's fit passed; a fit that raises or fails the gate is a failed night (`cpo nightly` exits
4), its report goes to the night's folder (or ``failed/<date>/`` when that folder holds a model) and
nothing else changes. With ``drift.fail_on_drift`` a drifted model is not promoted (exit 3). Bad input
found before the fit (``causal.cv`` more folds than the window's queries allow) is refused (exit 2)
before any embedding, and the state stays as it was.

A night is one transaction, under the state folder's lock: its writes to the state (its day of triplets,
the verified ones, live.json) wait in ``runs/<date>/staged/`` and enter the state together with the move
of current.json at the end (:func:`commit`). A night killed before that leaves nothing that counts (a
rerun discards what it staged); one killed during it is completed by the next night (:func:`recover`).

Promotion of a prompt or policy (``live.json``) rests on measured evidence. With an LLM (a ``generation``
section): tonight's searched prompts, the best logged ones and the per-query policy run on held-out queries
against the live one, and a challenger goes live only when its measured uplift is positive with a 95% lower
bound >= ``verify.margin``. Without one: a share of tonight's fresh queries is held out of the fit, and
tonight's static prompt and per-query policy are valued against the live one on their logs (measured on a
grid, else doubly robust), going live when the lower bound of the difference is > ``promote.margin``
(:mod:`cpo_engine.workflows.nightly_evidence`); live.json keeps the evidence. Otherwise the live one stays and
the report says why. Every night's bundle holds its ``policy.json``: ``cpo assign --model STATE/runs/<date>``
serves that night, ``cpo assign --model STATE`` what live.json names.

A state on an object store (``s3://bucket/prefix``, ``gs://...``) has the same layout; a night works on a local
mirror of it under the state's lock object and pushes its run folders first and the pointers last
(:mod:`cpo_engine.workflows.nightly_remote`).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cpo_engine.exceptions import DataError
from cpo_engine.utils import FolderLock, atomic_write_json, atomic_write_parquet, remove_stale_temps
from cpo_engine.workflows.common import Representer, scores_and_weights
from cpo_engine.settings import DriftConfig, GateConfig, NightlyConfig
from cpo_engine.workflows.nightly_state import STAGED, read_json, staged

if TYPE_CHECKING:
    from cpo_engine.generation.types import Backend
    from cpo_engine.causal.dml import CausalRewardModel
    from cpo_engine.embedding.representations import Representations

log = logging.getLogger(__name__)

#: the commit record of a night (see :func:`commit`)
JOURNAL = "commit.json"

#: model_status of a night whose fit raised or failed the gate (`cpo nightly` exits non-zero).
FAILED_STATUSES = ("kept_previous", "no_model")


# ---------------------------------------------------------------------------------------- data


def read_new(path: str | Path, columns: Any = None, score_field: str | None = None) -> pa.Table:
    """Today's triplets: a `cpo generate` run folder (error-free rows) or any triplet table (a local path or a
    URI; ``columns``/``score_field`` as in :func:`cpo_engine.data.read_triplets`)."""
    from cpo_engine.data import read_triplets, validate_triplets
    from cpo_engine.data.storage import is_remote

    if is_remote(path):
        return read_triplets(str(path), columns, score_field)
    path = Path(path)
    if (path / "manifest.json").is_file():
        from cpo_engine.generation.store import read_generated

        table = read_generated(path, drop_errors=True)
        return validate_triplets(table.drop_columns(["generated_at"]), source=str(path))
    return read_triplets(path, columns, score_field)


def tonight_table(new: str | Path, date: str, columns: Any = None, score_field: str | None = None) -> pa.Table:
    """Tonight's validated triplets, tagged with the date (nothing is written)."""
    table = read_new(new, columns, score_field)
    if table.num_rows == 0:
        raise DataError("no usable triplets to append", source=str(new), fix="check the generation errors")
    return table.append_column("nightly_date", pa.array([date] * table.num_rows, pa.string()))


def stored_files(state: Path) -> dict[str, list[Path]]:
    """date -> the stored triplet files of that date (the day's file, then its verified triplets)."""
    out: dict[str, list[Path]] = {}
    for f in sorted((state / "triplets").glob("*.parquet")):
        out.setdefault(f.stem, []).insert(0, f)
    for f in sorted((state / "triplets" / "verified").glob("*.parquet")):
        out.setdefault(f.stem, []).append(f)
    return out


def check_texts(state: Path, table: pa.Table, date: str, source: str) -> None:
    """A query_id (or prompt_id) must keep its text across days: a reworded one is a DataError
    naming both texts and both dates (the first text would otherwise silently win)."""
    for d, files in stored_files(state).items():
        if d == date:
            continue  # tonight's file is replaced, not compared
        for f in files:
            old = _read_day(f, columns=["query_id", "query_text", "prompt_id", "prompt_text"])
            for id_col, text_col in (("query_id", "query_text"), ("prompt_id", "prompt_text")):
                _same_texts(old, table, id_col, text_col, f"{f} ({d})", f"{source} ({date})")


def _same_texts(old: pa.Table, new: pa.Table, id_col: str, text_col: str, old_src: str, new_src: str) -> None:
    known = dict(zip(old.column(id_col).to_pylist(), old.column(text_col).to_pylist()))
    for i, (k, text) in enumerate(zip(new.column(id_col).to_pylist(), new.column(text_col).to_pylist())):
        if k in known and known[k] != text:
            raise DataError(f"{id_col} '{k}' changed its text: {known[k]!r} in {old_src} but {text!r} in {new_src}",
                            source=new_src, column=text_col, rows=[i],
                            fix=f"give the reworded text a new {id_col} (an id must mean one text on every day)")


def load_window(state: Path, window_days: int | None, tonight: tuple[str, pa.Table] | None = None
                ) -> tuple[pa.Table, list[str]]:
    """Triplets of the last ``window_days`` dates (all when None), with the dates used. ``tonight``
    (date, table) stands in for that date's stored file without being written."""
    files = stored_files(state)
    tables_by_date: dict[str, list[pa.Table]] = {d: [_read_day(f) for f in fs] for d, fs in files.items()}
    if tonight is not None:
        date, table = tonight
        tables_by_date[date] = [table]  # tonight's rows replace that date's stored ones
    dates = sorted(tables_by_date)
    if window_days is not None:
        dates = dates[-window_days:]
    if not dates:
        raise DataError("no triplets in the nightly state", source=str(state / "triplets"),
                        fix="pass --new with today's triplets")
    tables = [t for d in dates for t in tables_by_date[d]]
    if any("weight" in t.column_names for t in tables):  # rows without a weight count once
        tables = [t if "weight" in t.column_names else t.append_column("weight", pa.array(np.ones(t.num_rows)))
                  for t in tables]
    common = [c for c in tables[0].column_names if all(c in t.column_names for t in tables)]
    table = pa.concat_tables(_same_types([t.select(common) for t in tables]), promote_options="permissive")
    return table, dates


def _same_types(tables: list[pa.Table]) -> list[pa.Table]:
    """Tables whose columns agree on a type: a column stored as numbers one night and as text another (a gold
    answer: 42.0 from a generated task, "42" from a team's logs) is read as text everywhere, instead of
    failing the merge of every later night ("Field gold_answer has incompatible types: double vs string")."""
    import pyarrow.compute as pc

    out = list(tables)
    for name in tables[0].column_names:
        types = {t.schema.field(name).type for t in tables}
        if len(types) <= 1 or all(pa.types.is_integer(x) or pa.types.is_floating(x) or pa.types.is_null(x)
                                  for x in types):
            continue  # one type, or numbers of several widths: concat_tables promotes those itself
        for i, t in enumerate(out):
            col = t.column(name)
            if not pa.types.is_string(col.type):
                text = pc.cast(col, pa.string()) if not pa.types.is_floating(col.type) else pa.chunked_array(
                    [pa.array([_number_text(v) for v in col.to_pylist()], pa.string())])
                out[i] = t.set_column(t.schema.get_field_index(name), name, text)
    return out


def _number_text(v: Any) -> str | None:
    """42.0 -> "42", 0.5 -> "0.5" (how a gold answer is written as text)."""
    if v is None:
        return None
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def append_triplets(state: Path, new: str | Path, date: str) -> Path:
    """Write ``new`` as ``triplets/<date>.parquet`` (replacing that date's file)."""
    return atomic_write_parquet(tonight_table(new, date), state / "triplets" / f"{date}.parquet")


# ---------------------------------------------------------------------------------- fit + gate


def night_cache(cfg: NightlyConfig, state: Path) -> Any:
    """The night's embedding cache: ``embed.cache_dir`` when the user set it (a folder or an s3:// / gs:// URI;
    None: no cache), else the state's own ``cache/`` (``<state URI>/cache`` on the store for a remote state, so a
    fresh machine reuses earlier nights' vectors; ``state``: the local folder or mirror the night runs on)."""
    from cpo_engine.data.storage import is_remote
    from cpo_engine.embedding.config import EmbedConfig

    if cfg.embed.cache_dir != EmbedConfig().cache_dir:
        return cfg.embed.cache_dir
    return f"{str(cfg.state).rstrip('/')}/cache" if is_remote(cfg.state) else state / "cache"


def fit_night(table: pa.Table, cfg: NightlyConfig, state: Path, representer: Representer | None = None,
              held_out: set[str] | None = None) -> tuple[Any, Any, Representer]:
    """Representations through the persistent embedding cache (:func:`night_cache`), then the causal model, with
    the same configuration sections (embed, pca, causal) and defaults as `cpo run`. ``held_out``: query ids
    whose rows the model is not fitted on (they value the night's policy; they are still represented)."""
    import warnings

    from cpo_engine.workflows.nightly_evidence import fit_rows

    rep = representer or Representer(cfg.embed, cache_dir=night_cache(cfg, state))
    reps = rep.represent(table, cfg.pca, show_progress=False)
    y, w = scores_and_weights(table)
    r = fit_rows(reps, held_out or set())
    model = cfg.causal.make_model(device=cfg.device, random_state=cfg.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # every warning is kept in model.diagnostics_.warnings
        model.fit(y[r], reps.T[reps.row_prompt[r]], X=reps.X[reps.row_query[r]], groups=reps.row_query[r],
                  sample_weight=None if w is None else w[r])
    return reps, model, rep


def gate_problems(model: CausalRewardModel, gate: GateConfig) -> list[str]:
    """Why a fitted model must not go live (empty: it may)."""
    d = model.diagnostics_
    problems = []
    head = model.linear_head()
    if not (np.all(np.isfinite(head.coef)) and np.all(np.isfinite(head.cov))):
        problems.append("non-finite coefficients or covariance")
    if d.ess_share < gate.min_ess_share:
        problems.append(below("effective sample share", d.ess_share, gate.min_ess_share))
    if not math.isfinite(d.gram_condition) or d.gram_condition > gate.max_condition:
        problems.append(f"final-stage condition number {d.gram_condition:.3g} > {gate.max_condition:.3g}")
    if d.overlap and min(d.overlap) < gate.min_overlap:
        problems.append(below("overlap", min(d.overlap), gate.min_overlap))
    if gate.fail_on_warnings and d.warnings:
        problems.extend(f"warning: {w}" for w in d.warnings)
    return problems


def below(name: str, value: float, threshold: float, percent: bool = False) -> str:
    """'name VALUE < THRESHOLD' printed with enough digits that the two printed numbers differ, so
    the text agrees with the verdict (0.4996 against 0.5 prints '0.4996 < 0.5', never '0.500 < 0.5')."""
    return f"{name} {_pair(value, threshold, percent, '<')}"


def above(name: str, value: float, threshold: float, percent: bool = False) -> str:
    """'name VALUE > THRESHOLD', digits as :func:`below`."""
    return f"{name} {_pair(value, threshold, percent, '>')}"


def _pair(value: float, threshold: float, percent: bool, op: str) -> str:
    scale, unit = (100.0, "%") if percent else (1.0, "")
    v, t = value * scale, threshold * scale
    for digits in range(1 if percent else 3, 12):
        if f"{v:.{digits}f}" != f"{t:.{digits}f}":
            break
    return f"{v:.{digits}f}{unit} {op} {t:g}{unit}"


# ------------------------------------------------------------------------------ search + compare


def pool_search(reps: Representations, model: CausalRewardModel, cfg: NightlyConfig) -> tuple[pa.Table, pa.Table]:
    """Per-query best prompt among the logged ones (the selection rule of `cpo run`: same reference,
    trust region and z), and each prompt's static effect (no LLM call)."""
    from cpo_engine.search import CandidateScorer, pool_assign, referenced_head

    def no_new_texts(texts: Any) -> np.ndarray:
        raise DataError("nightly scores only the logged prompts (their representations are known)")

    head, incumbent = referenced_head(model.linear_head(), reps.X, reps.T, cfg.selection.reference)
    scorer = CandidateScorer.from_selection(head, reps.X, no_new_texts, cfg.selection, reps.T, device="cpu")
    pool = pool_assign(scorer, [str(p) for p in reps.prompt_ids], list(reps.prompt_texts), T_pool=reps.T,
                       incumbent=incumbent)
    assignment = pool.assignment_table(reps.query_ids).rename_columns(
        ["query_id", "prompt_id", "effect", "se", "source"])
    prompts = pa.table({"prompt_id": pool.prompt_ids, "static_effect": pool.effect.mean(axis=0),
                        "static_se": pool.se.mean(axis=0)})
    return assignment, prompts


def predicted_uplift(assignment: pa.Table, prompts: pa.Table) -> float:
    """Mean predicted gain of the per-query choice over the best static prompt."""
    static_best = float(np.max(prompts.column("static_effect").to_numpy()))
    return float(np.mean(assignment.column("effect").to_numpy())) - static_best


def compare(prev_dir: Path, assignment: pa.Table, prompts: pa.Table, drift: DriftConfig) -> dict[str, Any]:
    """Kendall tau of static effects, share of changed choices, uplift change, and the drift flags."""
    from scipy.stats import kendalltau

    prev_a = pq.read_table(prev_dir / "assignment.parquet")
    prev_p = pq.read_table(prev_dir / "prompts.parquet")
    old = dict(zip(prev_p.column("prompt_id").to_pylist(), prev_p.column("static_effect").to_pylist()))
    new = dict(zip(prompts.column("prompt_id").to_pylist(), prompts.column("static_effect").to_pylist()))
    common = sorted(set(old) & set(new))
    tau = float(kendalltau([old[p] for p in common], [new[p] for p in common]).statistic) if len(common) >= 3 else None
    old_q = dict(zip(prev_a.column("query_id").to_pylist(), prev_a.column("prompt_id").to_pylist()))
    new_q = dict(zip(assignment.column("query_id").to_pylist(), assignment.column("prompt_id").to_pylist()))
    shared = set(old_q) & set(new_q)
    changed = sum(old_q[q] != new_q[q] for q in shared) / len(shared) if shared else None
    up_old, up_new = predicted_uplift(prev_a, prev_p), predicted_uplift(assignment, prompts)
    flags = []
    if tau is not None and math.isnan(tau):
        flags.append("prompt ranking moved: Kendall tau undefined (constant static effects)")
    elif tau is not None and tau < drift.min_kendall_tau:
        flags.append("prompt ranking moved: " + below("Kendall tau", tau, drift.min_kendall_tau))
    if changed is not None and changed > drift.max_changed_share:
        flags.append(above("queries that changed prompt", changed, drift.max_changed_share, percent=True))
    if abs(up_new - up_old) > drift.max_uplift_change:
        flags.append(f"predicted uplift moved {up_old:+.4f} -> {up_new:+.4f}: "
                     + above("change", abs(up_new - up_old), drift.max_uplift_change))
    return {"previous_run": str(prev_dir), "kendall_tau": tau, "common_prompts": len(common),
            "changed_share": changed, "common_queries": len(shared), "uplift_previous": up_old,
            "uplift_new": up_new, "drift": bool(flags), "drift_reasons": flags}


# ------------------------------------------------------------------------------------------ run


def night_dir(state: Path, date: str, current: dict[str, Any]) -> Path:
    """Tonight's run folder: runs/<date>, or runs/<date>-N when runs/<date> is the live run (which
    must stay byte-identical)."""
    live = (state / current["run"]).resolve() if current.get("run") else None
    run_dir, k = state / "runs" / date, 1
    while live is not None and run_dir.resolve() == live:
        run_dir, k = state / "runs" / f"{date}-{k}", k + 1
    return run_dir


@dataclass
class NightlyResult:
    """What one night did; ``report`` is what the night's ``report.json`` holds (its diagnostics, held-out
    split, verification, ...)."""

    date: str
    model_status: str
    """'updated', 'drift_blocked', or (the night failed) one of :data:`FAILED_STATUSES`."""
    live_run: str | None
    """The run folder served after the night, relative to the state folder."""
    report_path: Path
    rows: int | None
    dates: list[str]
    gate_problems: list[str]
    comparison: dict[str, Any] | None
    """Against the previous live run (None on the first night)."""
    promotion: dict[str, Any] | None
    """What is live after the night and why (None when the night failed before it)."""
    report: dict[str, Any]
    report_uri: str | None = None
    """Where the night's report.json was pushed, for a state on an object store (report_path: its local mirror)."""

    @classmethod
    def from_report(cls, report: dict[str, Any]) -> "NightlyResult":
        return cls(date=report["date"], model_status=report["model_status"], live_run=report.get("live_run"),
                   report_path=Path(report["report_path"]), rows=report.get("rows"), dates=report.get("dates") or [],
                   gate_problems=report.get("gate_problems") or [], comparison=report.get("comparison"),
                   promotion=report.get("promotion"), report=report)

    @property
    def failed(self) -> bool:
        return self.model_status in FAILED_STATUSES


def run_nightly(cfg: NightlyConfig, representer: Representer | None = None,
                backend: Backend | None = None) -> NightlyResult:
    """One night: read -> check -> refit (cached embeddings) -> gate -> search -> compare -> verify ->
    promote -> report -> commit, holding the state folder's lock (one night at a time). See the module
    docstring for what is written when."""
    from cpo_engine.data.storage import is_remote
    from cpo_engine.workflows.run import resolve_proposer
    from cpo_engine.workflows.tracking import check_tracking, log_folder

    check_tracking(cfg.tracking)  # --mlflow without the mlflow extra: before the state is touched
    cfg = resolve_proposer(cfg)  # 'auto': search only when an LLM can verify what it finds
    if is_remote(cfg.state):
        result = _remote_night(cfg, representer, backend)
    else:
        state = Path(cfg.state)
        with FolderLock(state, "nightly state folder", fix=" (one `cpo nightly` at a time per --state)"):
            recover(state)
            result = NightlyResult.from_report(_night(cfg, state, representer, backend))
    log_folder(cfg.tracking, result.report_path.parent, "nightly")  # the night's folder, once committed
    return result


def _remote_night(cfg: NightlyConfig, representer: Representer | None, backend: Backend | None) -> NightlyResult:
    """A night on an object-store state: under its lock object, pulled into a local mirror, run there as on a local
    state, then pushed with the pointers last (:mod:`cpo_engine.workflows.nightly_remote`)."""
    from dataclasses import replace

    from cpo_engine.workflows import nightly_remote as remote

    uri, cfg = str(cfg.state).rstrip("/"), replace(cfg, date=_date(cfg))  # one date for the pull and the night
    with remote.StateLock(uri) as lock:
        remote.recover(uri)
        mirror = remote.mirror_folder(uri)
        mirror.mkdir(parents=True, exist_ok=True)
        with FolderLock(mirror, "local mirror of the nightly state", fix=f" (one `cpo nightly` at a time per {uri})"):
            local, before = remote.pull(uri, cfg.date)
            try:
                report = _night(cfg, local, representer, backend)
            except DataError as exc:  # a damaged state file: name its object on the store, not the mirror's copy
                raise remote.on_store(exc, local, uri) from None
            remote.push(uri, local, before, report["run_dir"], lock)
    result = NightlyResult.from_report(report)
    result.report_uri = f"{uri}/{result.report_path.relative_to(local).as_posix()}"
    return result


def _date(cfg: NightlyConfig) -> str:
    return cfg.date or time.strftime("%Y-%m-%d", time.gmtime())


def _night(cfg: NightlyConfig, state: Path, representer: Representer | None, backend: Backend) -> dict[str, Any]:
    date = _date(cfg)
    current = read_json(state / "current.json")
    check_current(state, current)
    run_dir = night_dir(state, date, current)
    shutil.rmtree(run_dir / STAGED, ignore_errors=True)  # what a killed attempt of this night staged never counts
    for folder in (run_dir, run_dir / "model"):
        remove_stale_temps(folder)
    report: dict[str, Any] = {"date": date, "run_dir": str(run_dir.relative_to(state)), "config": asdict(cfg),
                              "started_at": _now()}
    new = tonight_table(cfg.new, date, cfg.columns, cfg.score_field) if cfg.new else None
    if new is not None:
        check_texts(state, new, date, str(cfg.new))
    table, dates = load_window(state, cfg.window_days, (date, new) if new is not None else None)
    _check_cv(cfg, table, state, dates)  # a ConfigError (exit 2) before any embedding, with nothing written
    report.update(rows=table.num_rows, dates=dates)
    from cpo_engine.workflows.nightly_evidence import choose_held_out, fit_rows

    # without an LLM to verify, promotion rests on tonight's fresh logs: a share of tonight's new queries is held out
    held = choose_held_out(table, new, date, cfg) if cfg.generation is None or not cfg.verify.enabled else None
    report["held_out"] = None if held is None else held.to_dict()
    try:
        reps, model, rep = fit_night(table, cfg, state, representer, held.ids if held else None)
        problems = gate_problems(model, cfg.gate)
        report["diagnostics"] = model.diagnostics_.to_dict()
    except Exception as exc:  # noqa: BLE001 - a failed fit keeps the previous model live
        log.error("nightly fit failed: %s: %s", type(exc).__name__, exc)
        report["traceback"] = traceback.format_exc()
        problems, model = [f"fit failed: {type(exc).__name__}: {exc}"], None
    report["gate_problems"] = problems
    if problems:
        report["model_status"] = "kept_previous" if current else "no_model"
        report["live_run"] = current.get("run")
        return _finish(_failed_dir(state, run_dir, date), report)
    from cpo_engine.policy.bundle import save_bundle

    assignment, prompts = pool_search(reps, model, cfg)
    prev = state / current["run"] if current else None
    report["comparison"] = compare(prev, assignment, prompts, cfg.drift) if prev else None
    report["predicted_uplift"] = predicted_uplift(assignment, prompts)
    report["best_static_prompt"] = prompts.column("prompt_id")[int(np.argmax(prompts["static_effect"]))].as_py()
    info = {"path": str(cfg.new), "dates": dates, "rows": table.num_rows}
    save_bundle(run_dir / "model", model, reps, cfg.embed, info)
    rows = fit_rows(reps, held.ids if held else set())
    policy_state = save_policy(run_dir / "model", model, reps, table, rows, cfg)
    atomic_write_parquet(assignment, run_dir / "assignment.parquet")
    atomic_write_parquet(prompts, run_dir / "prompts.parquet")
    blocked = bool(report["comparison"] and report["comparison"]["drift"] and cfg.drift.fail_on_drift)
    if blocked:
        if new is not None:
            _store_day(state, date, new, current, False, run_dir, report)
        report["model_status"] = "drift_blocked"
        report["live_run"] = current.get("run")
        report["promotion"] = {"status": "kept", "reason": "the model drifted and drift.fail_on_drift is set"}
        _finish(run_dir, report)
        commit(state, run_dir, None)
        return report
    from cpo_engine.workflows.nightly_promote import search_and_promote

    report["promotion"] = search_and_promote(state, run_dir, date, cfg, table, reps, model, rep, backend,
                                             held=held, rows=rows, policy_state=policy_state)
    # the night commits here, all at once: tonight's triplets enter the state only now, so a night that fails
    # anywhere before (search, verification, a crash) leaves the stored days (the live date's too) as they were
    if new is not None:
        _store_day(state, date, new, current, True, run_dir, report)
    report["model_status"] = "updated"
    report["live_run"] = str(run_dir.relative_to(state))
    _finish(run_dir, report)
    commit(state, run_dir, {"date": date, "run": str(run_dir.relative_to(state))})
    return report


def save_policy(bundle: Path, model: CausalRewardModel, reps: Representations, table: pa.Table, rows: np.ndarray,
                cfg: NightlyConfig) -> Any:
    """The night's ``model/policy.json`` (what `cpo assign --model STATE/runs/<date>` applies, and the per-query
    policy that can go live): the policy state of the rows the model was fitted on, as `cpo fit` writes it."""
    from cpo_engine.policy.policy import Policy, table_state

    y, _ = scores_and_weights(table)
    state = table_state(model, reps, y, cfg.selection, table, cfg.seed, rows=rows)
    state.save(bundle)
    policy = Policy(model, state, cfg.policy, device="cpu")
    if policy.problems:
        log.info("tonight's per-query policy falls back to its static prompt '%s': %s", state.static_id,
                 "; ".join(policy.problems))
    return state


def _check_cv(cfg: NightlyConfig, table: pa.Table, state: Path, dates: list[str]) -> None:
    """``causal.cv`` against the queries of tonight's window, as `cpo run`/`fit`/`ope` check it: a night that
    cannot be cross-fitted is bad input (exit 2) refused before the embedding, not a failed night, and it leaves
    the state as it was (no report, no staged or stored triplets)."""
    import pyarrow.compute as pc

    from cpo_engine.workflows.common import check_cv

    window = f"{len(dates)} date(s) {dates[0]}..{dates[-1]}" if len(dates) > 1 else f"date {dates[0]}"
    source = f"the nightly window of {state} ({window}{', with --new ' + str(cfg.new) if cfg.new else ''})"
    hint = "" if cfg.window_days is None else f" (window_days={cfg.window_days})"
    check_cv(cfg.causal.cv, len(pc.unique(table["query_id"])), source, hint)


def commit(state: Path, run_dir: Path, current: dict[str, Any] | None) -> None:
    """Tonight's state writes, all or nothing: the files staged in <run>/staged/ (its day of triplets, the
    verified ones, live.json) replace their state paths, then current.json moves to ``current`` (None: it
    stays). Writing commit.json is the commit point: a night killed before it left nothing that counts, one
    killed after it is completed by the next night (:func:`recover`)."""
    folder = run_dir / STAGED
    moves = {str(f.relative_to(folder)): str(f.relative_to(state)) for f in sorted(folder.rglob("*"))
             if f.is_file() and not f.name.startswith(".")}
    atomic_write_json(state / JOURNAL, {"moves": moves, "current": current})
    recover(state)


def recover(state: Path) -> None:
    """Finish a commit that a killed night left half done (commit.json), and remove the temp files a killed
    night left in the state folder; call it holding the state's lock."""
    journal = read_json(state / JOURNAL)
    for dest, src in (journal.get("moves") or {}).items():
        if (state / src).is_file():  # moved already when a previous recovery got this far
            (state / dest).parent.mkdir(parents=True, exist_ok=True)
            os.replace(state / src, state / dest)
    if journal.get("current"):
        atomic_write_json(state / "current.json", journal["current"])
    if journal:
        (state / JOURNAL).unlink()
    for folder in (state, state / "triplets", state / "triplets" / "verified"):
        remove_stale_temps(folder)


def _store_day(state: Path, date: str, new: pa.Table, current: dict[str, Any], promote: bool, run_dir: Path,
               report: dict[str, Any]) -> None:
    """Write tonight's triplets once the fit passed, unless they would replace the live run's own
    rows for a night that is not promoted (then they stay beside the night's run)."""
    if not promote and current.get("date") == date:
        report["appended"] = str(atomic_write_parquet(new, run_dir / "new_triplets.parquet"))
        return
    atomic_write_parquet(new, staged(run_dir, f"triplets/{date}.parquet"))
    report["appended"] = str(state / "triplets" / f"{date}.parquet")


def _failed_dir(state: Path, run_dir: Path, date: str) -> Path:
    """Where a failed night's report goes: its folder, unless that holds a model (then failed/<date>)."""
    return state / "failed" / date if (run_dir / "model").exists() else run_dir


def check_current(state: Path, current: dict[str, Any]) -> None:
    """current.json must name a live run folder that holds the outputs tonight is compared with; a missing
    one is a DataError naming current.json, that folder and the fix (not a FileNotFoundError on one of its files)."""
    if not current:
        return
    path = state / "current.json"
    run = current.get("run")
    if not isinstance(run, str) or not run:
        raise DataError(f"the nightly state file does not name the live run (no \"run\" key): {current}",
                        source=str(path), fix="restore current.json from a backup, or delete it (the next night then "
                                              "fits from scratch and compares with no previous run)")
    missing = [f for f in ("assignment.parquet", "prompts.parquet") if not (state / run / f).is_file()]
    if missing:
        what = "does not exist" if not (state / run).exists() else f"lacks {', '.join(missing)}"
        raise DataError(f"the live run it names, {state / run}, {what}", source=str(path),
                        fix=f"restore {state / run} from a backup, or edit current.json to name another run under "
                            f"{state / 'runs'} (or delete current.json: the next night then fits from scratch and "
                            "compares with no previous run)")


def _read_day(path: Path, columns: list[str] | None = None) -> pa.Table:
    """A stored day of triplets; a damaged file is a DataError naming it (not a pyarrow traceback)."""
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"a stored day of triplets cannot be read ({str(exc).splitlines()[0]})", source=str(path),
                        fix="restore the file from a backup, or move it out of triplets/ (that day's rows are then "
                            "left out of the window)") from None


def _finish(run_dir: Path, report: dict[str, Any]) -> dict[str, Any]:
    from cpo_engine.workflows.common import write_manifest

    report["finished_at"] = _now()
    report["report_path"] = str(run_dir / "report.json")
    atomic_write_json(run_dir / "report.json", report)
    write_manifest(run_dir, "nightly", report.get("config"), {"report": run_dir / "report.json"},
                   started_at=report.get("started_at"),
                   status="failed" if report.get("model_status") in FAILED_STATUSES else "ok",
                   model_status=report.get("model_status"), date=report.get("date"))
    return report


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


__all__ = ["NightlyResult", "run_nightly", "append_triplets", "load_window", "tonight_table", "check_texts",
           "stored_files", "gate_problems", "pool_search", "compare", "predicted_uplift", "below", "above", "night_dir",
           "read_json", "check_current", "commit", "recover", "staged", "FAILED_STATUSES"]
