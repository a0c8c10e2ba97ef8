"""Steps every workflow shares: the run folder and its manifest, reading the data, building representations."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator, TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cpo_engine.data.config import DataConfig
from cpo_engine.exceptions import ConfigError
from cpo_engine.policy.represent import Representer  # noqa: F401 (re-exported: every workflow embeds through it)
from cpo_engine.utils import (LEDGER, FolderLock, atomic_write_json, atomic_write_parquet, device_info,
                              remove_stale_temps, versions)

if TYPE_CHECKING:
    from cpo_engine.embedding.representations import Representations

log = logging.getLogger(__name__)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Manifest:
    """A run folder's manifest.json, rewritten after every stage so a crash leaves a true record; a run
    that raises is recorded as ``failed`` with its error."""

    def __init__(self, run_dir: Path, cfg: Any, workflow: str | None = None,
                 replaces: dict[str, Any] | None = None) -> None:
        self.run_dir = run_dir
        self.data: dict[str, Any] = {"kind": workflow, "workflow": workflow, "config": asdict(cfg),
                                     "versions": versions(), "device": device_info(), "pid": os.getpid(),
                                     "started_at": now(), "status": "running", "timings_s": {}, "outputs": {}}
        if replaces:
            self.data["replaces"] = replaces
        LEDGER.reset()  # the cost ledger (manifest "cost") counts this run from here
        self.write()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        log.info("stage %s ...", name)
        t0 = time.perf_counter()
        with LEDGER.stage(name):
            yield
        self.data["timings_s"][name] = round(time.perf_counter() - t0, 3)
        log.info("stage %s done in %.1f s", name, self.data["timings_s"][name])
        self.write()

    @contextmanager
    def running(self) -> Iterator["Manifest"]:
        """Mark the run ``ok`` when the block ends, ``failed`` (with the error) when it raises."""
        try:
            yield self
        except BaseException as exc:
            self.data.update(status="failed", error=f"{type(exc).__name__}: {exc}", finished_at=now())
            self.write()
            raise
        self.data.update(status="ok", finished_at=now())
        self.write()
        log_cost_summary()

    def output(self, key: str, path: Path) -> None:
        # Written at once: a run killed later still lists everything it wrote, so the next run can clear it.
        self.data["outputs"][key] = str(Path(path).relative_to(self.run_dir))
        self.write()

    def write(self) -> None:
        self.data["cost"] = LEDGER.snapshot()
        atomic_write_json(self.run_dir / "manifest.json", self.data)


def log_cost_summary() -> None:
    """One INFO line per run for the embedding cache and the LLM (the per-shard lines are at DEBUG)."""
    total = LEDGER.snapshot()["total"]
    if total["embedded_texts"]:
        log.info("embedding cache: %d new vectors written this run", total["embedded_texts"])
    if total["llm_calls"]:
        log.info("LLM: %d calls, %d prompt + %d completion tokens this run", total["llm_calls"],
                 total["prompt_tokens"], total["completion_tokens"])


MANIFEST = "manifest.json"

#: The manifest of a folder of Parquet parts (`cpo assign --out FOLDER`): readers of the parts skip '_' files.
PARTS_MANIFEST = "_manifest.json"

#: The kinds of folder a `cpo` command writes, each named by its manifest's ``kind``.
KINDS = ("run", "fit", "optimize", "evaluate", "ope", "generate", "embed", "edits", "assign", "verify", "loop",
         "nightly")


def write_manifest(folder: str | Path, kind: str, cfg: Any = None, outputs: dict[str, Any] | None = None,
                   started_at: str | None = None, status: str = "ok", **extra: Any) -> Path:
    """``manifest.json`` of a command's output folder that is not written through :func:`open_run`: its
    ``kind`` (one of :data:`KINDS`: what wrote the folder, so `cpo verify` and the next command read it
    instead of guessing from the files), status, config, versions, times and outputs (relative to the folder
    when inside it)."""
    folder = Path(folder)
    rel = {}
    for key, path in (outputs or {}).items():
        try:
            rel[key] = str(Path(path).resolve().relative_to(folder.resolve()))
        except ValueError:
            rel[key] = str(path)
    return atomic_write_json(folder / MANIFEST, manifest_data(kind, cfg, rel, started_at, status, **extra))


def manifest_data(kind: str, cfg: Any = None, outputs: dict[str, str] | None = None, started_at: str | None = None,
                  status: str = "ok", **extra: Any) -> dict[str, Any]:
    """The content of a manifest written once, at the end (:func:`write_manifest`)."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}: one of {KINDS}")
    config = asdict(cfg) if cfg is not None and hasattr(cfg, "__dataclass_fields__") else cfg
    return {"kind": kind, "workflow": kind, "status": status, "config": config, "versions": versions(),
            "pid": os.getpid(), "started_at": started_at or now(), "finished_at": now(), "outputs": outputs or {},
            "cost": LEDGER.snapshot(), **extra}


def refuse_other_kind(folder: str | Path, kind: str, flag: str = "--out") -> None:
    """Before any work: a folder whose manifest names another kind (a `cpo run` folder given to `cpo optimize
    --out`, ...) is refused, so a command never mixes its outputs into another's folder or relabels it."""
    found = read_kind(folder)
    if found not in (None, kind):
        raise ConfigError(f"{flag} {folder} is a `cpo {found}` folder (its {MANIFEST} says kind '{found}'): "
                          f"`cpo {kind}` would mix its outputs into it\n  fix: pass another folder, e.g. "
                          f"{flag} {Path(folder) / kind}")


def read_kind(folder: str | Path) -> str | None:
    """The kind of output folder ``folder`` is, from its manifest (None: no readable manifest). Run and fit
    folders written before manifests named their kind say it as their ``workflow``; a `cpo generate` store's
    manifest by its format."""
    path = Path(folder) / MANIFEST
    if not path.is_file() and (Path(folder) / PARTS_MANIFEST).is_file():
        path = Path(folder) / PARTS_MANIFEST
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    if data.get("kind") or data.get("workflow"):
        return str(data.get("kind") or data.get("workflow"))
    return "generate" if str(data.get("format", "")).startswith("cpo-generation") else None


@contextmanager
def open_run(run_dir: str | Path, cfg: Any, workflow: str, owned: tuple[str, ...],
             flag: str = "--out") -> Iterator[Manifest]:
    """A run folder for one run of ``workflow``, with its manifest, from start to ``ok``/``failed``.

    Before anything runs: ``run_dir`` must be (or become) a writable folder, else a
    :class:`ConfigError` names it and ``flag``; its lock is taken, so a second process writing the
    same folder is refused (:class:`~cpo_engine.exceptions.BusyError`) instead of interleaving; and what
    a previous run left there (its listed outputs, the names in ``owned``) is moved into ``.cpo-previous``
    and temp files of a killed write are removed, so the folder never mixes two runs. The new manifest
    records the run it replaced. When the new run ends ``ok``, the earlier outputs are deleted; when it
    fails before writing any output (a typo in a path, bad data), they are put back with their manifest,
    so a failed rerun never destroys a good run; when it fails later, they are deleted.

    Parameters
    ----------
    owned : tuple of str
        Top-level names the workflow writes in the folder (files or folders).
    """
    run_dir = usable_folder(run_dir, flag)
    refuse_foreign_folder(run_dir, flag)  # before the lock: a refused folder gets no .cpo.lock either
    lock = FolderLock(run_dir, "run folder", fix=f" or pass another {flag}").acquire()
    try:
        replaces, moved = set_aside_previous_run(run_dir, owned, flag)
        manifest = Manifest(run_dir, cfg, workflow=workflow, replaces=replaces)
        try:
            with manifest.running():
                yield manifest
        except BaseException:
            _restore_or_drop(run_dir, moved, owned, manifest)
            raise
        shutil.rmtree(run_dir / PREVIOUS, ignore_errors=True)
    finally:
        lock.release()


def staged(cfg: Any, workflow: Any, flag: str = "--out") -> Any:
    """Run ``workflow(cfg)`` for a ``cfg.out`` on an object store (s3://, gs://): the run folder is written in a
    local staging folder (:func:`cpo_engine.data.storage.staging_folder`, kept as the run's local copy, the
    ``run_dir`` of the result) and uploaded when the run ends ``ok``, its manifest last
    (:func:`~cpo_engine.data.storage.upload_folder`); a failed run uploads nothing. The bucket is checked
    before any work. The manifest records the URI (``uploaded_to``), never a credential."""
    import dataclasses

    import pyarrow.fs as pafs

    from cpo_engine.data.storage import CREDENTIALS_HINT, location, staging_folder, upload_folder

    uri = str(cfg.out).rstrip("/")
    fs, inner = location(uri)
    bucket = inner.split("/", 1)[0]
    try:
        missing = fs.get_file_info(bucket).type == pafs.FileType.NotFound
    except OSError as exc:
        raise ConfigError(f"{flag} {uri}: cannot reach the store ({str(exc).splitlines()[0]})\n  fix: "
                          f"{CREDENTIALS_HINT}") from exc
    if missing:
        raise ConfigError(f"{flag} {uri}: the bucket '{bucket}' does not exist\n  fix: create it, or pass another "
                          f"{flag}; {CREDENTIALS_HINT}")
    local = staging_folder(uri)
    result = workflow(dataclasses.replace(cfg, out=str(local)))
    manifest = json.loads((local / MANIFEST).read_text())
    manifest["uploaded_to"] = uri
    atomic_write_json(local / MANIFEST, manifest)
    upload_folder(local, uri)
    log.info("uploaded the run folder to %s (local copy: %s)", uri, local)
    return result


#: Nuisances that need an optional package: (module, extra).
_NUISANCE_NEEDS = {"cuml_ridge": ("cuml", "cuml"), "lgbm": ("lightgbm", "lightgbm")}


def preflight(cfg: Any) -> None:
    """What can be checked before any data is read or embedded: the nuisances' optional packages (cuML,
    LightGBM) and an edit prior file named by the search settings. A mistake there used to surface after the
    embedding and the fit, leaving a half-written run folder."""
    from cpo_engine.utils import require

    causal = getattr(cfg, "causal", None)
    for key in ("model_y", "model_t"):
        name = getattr(causal, key, None) if causal is not None else None
        if isinstance(name, str) and name in _NUISANCE_NEEDS:
            require(*_NUISANCE_NEEDS[name])
    proposer = getattr(cfg, "proposer", None)
    if proposer is not None:
        from cpo_engine.search.proposers import preflight_proposer

        preflight_proposer(proposer)  # e.g. the edit proposer reads and validates its edit prior file


#: Queries each cross-fitting fold must hold out (CausalRewardModel's min_groups_per_fold).
MIN_QUERIES_PER_FOLD = 2


def check_cv(cv: int, n_queries: int, source: str, held_out: str = "", key: str = "causal.cv",
             flag: str = "--cv") -> None:
    """Right after the data are read: ``cv`` cross-fitting folds need ``MIN_QUERIES_PER_FOLD`` distinct
    training queries each. A ConfigError names the setting, its value, the queries there are and the fix;
    before, the fit raised it after the embedding, with summary.json and features/ already written."""
    if not isinstance(cv, int) or isinstance(cv, bool) or n_queries >= cv * MIN_QUERIES_PER_FOLD:
        return
    most = n_queries // MIN_QUERIES_PER_FOLD
    lower = (f"lower {key} to at most {most} ({flag} {most} or --set {key}={most})" if most >= 2
             else "cross-fitting needs at least 4 distinct training queries")
    raise ConfigError(
        f"{key} = {cv} cross-fitting folds need at least {cv * MIN_QUERIES_PER_FOLD} distinct training queries "
        f"({MIN_QUERIES_PER_FOLD} per fold), but {source} has only {n_queries} for training{held_out}\n"
        f"  fix: {lower}, or log more queries")


def refuse_foreign_folder(run_dir: Path, flag: str = "--out") -> None:
    """A folder with files in it but no cpo manifest is someone else's: refused, so a run never mixes its
    outputs into it (hidden files such as .cpo.lock or .cpo_cache do not count)."""
    if (run_dir / MANIFEST).exists():
        return
    entries = sorted(p.name for p in run_dir.iterdir() if not p.name.startswith("."))
    if entries:
        listed = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
        raise ConfigError(f"{flag} {run_dir} already holds {listed} but no cpo {MANIFEST}: it does not look like a "
                          "cpo run folder, and a run would mix its outputs into it\n  fix: pass a new or empty folder")


def usable_folder(path: str | Path, flag: str = "--out") -> Path:
    """``path`` as a folder that exists and can be written, or a ConfigError naming it and ``flag``."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{flag} {p} is a file, not a folder\n  fix: pass a folder path (it is created when missing)")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{flag} {p}: cannot create this folder ({exc.strerror or exc})\n  fix: pass a folder you "
                          "can write, e.g. runs/mine") from exc
    if not os.access(p, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {p} is not writable\n  fix: pass a folder you can write, e.g. runs/mine")
    return p


PREVIOUS = ".cpo-previous"


def set_aside_previous_run(run_dir: Path, owned: tuple[str, ...],
                           flag: str = "--out") -> tuple[dict[str, Any] | None, list[str]]:
    """Move what an earlier run wrote in ``run_dir`` into ``run_dir/.cpo-previous`` (call it holding the
    folder's lock); returns what the earlier manifest said about that run (None when the folder held
    none) and the names moved.

    A folder that holds names the workflow writes but no cpo manifest is not a run folder: it is refused
    rather than emptied, so user files are never deleted.
    """
    shutil.rmtree(run_dir / PREVIOUS, ignore_errors=True)  # left by a run killed before it ended
    previous = _read_previous(run_dir / MANIFEST)
    present = [n for n in owned if (run_dir / n).exists()]
    remove_stale_temps(run_dir)
    if previous is None:
        if present:
            raise ConfigError(f"{flag} {run_dir} already holds {', '.join(present)} but no cpo {MANIFEST}: it does "
                              "not look like a cpo run folder\n  fix: pass a new or empty folder")
        return None, []
    listed = {Path(p).parts[0] for p in (previous.get("outputs") or {}).values() if p and not Path(p).is_absolute()}
    moved = [n for n in sorted(set(present) | listed) if ".." not in n and (run_dir / n).exists()]
    (run_dir / PREVIOUS).mkdir()
    for name in [*moved, MANIFEST]:
        os.replace(run_dir / name, run_dir / PREVIOUS / name)
    status = previous.get("status")
    if status == "running":
        status = "interrupted"  # it never recorded an end: killed (its lock is free, so it is not running)
    replaced = {k: previous.get(k) for k in ("workflow", "started_at", "finished_at", "error") if previous.get(k)}
    replaced["status"] = status
    log.warning("%s holds an earlier %s run (status %s, started %s): its outputs are replaced by this run's",
                run_dir, previous.get("workflow") or "cpo", status, previous.get("started_at"))
    return replaced, moved


def _restore_or_drop(run_dir: Path, moved: list[str], owned: tuple[str, ...], manifest: Manifest) -> None:
    """After a failed run: put the earlier run back when this one wrote nothing, else delete it."""
    stash = run_dir / PREVIOUS
    wrote = manifest.data["outputs"] or any((run_dir / n).exists() for n in {*owned, *moved})
    if stash.is_dir() and not wrote:
        for name in [*moved, MANIFEST]:
            os.replace(stash / name, run_dir / name)
        log.warning("the run failed before writing any output: the earlier run in %s is kept as it was", run_dir)
    shutil.rmtree(stash, ignore_errors=True)


def _read_previous(path: Path) -> dict[str, Any] | None:
    """The manifest of the run that wrote this folder (None: no manifest); another kind of manifest (a
    `cpo generate` run's) or an unreadable one is refused: the folder is not ours to clear."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} cannot be read ({exc}): the folder's earlier run is unknown, so it is not "
                          "cleared\n  fix: pass another folder, or delete the folder if it is yours") from exc
    if not (isinstance(data, dict) and "status" in data and "config" in data):
        kind = data.get("format") if isinstance(data, dict) else None
        raise ConfigError(f"{path} is not the manifest of a cpo run/fit ({kind or 'unknown kind'}): this folder "
                          "belongs to something else (e.g. a `cpo generate` run)\n  fix: pass another folder")
    return data


def load_data(cfg: DataConfig) -> tuple[pa.Table, dict[str, Any]]:
    """Read and validate the configured table (the bundled example when no path is set). A table given in
    memory (``cfg.table``: a pyarrow Table or pandas DataFrame) is validated as it is and recorded by its
    description and the sha256 of its Arrow IPC stream."""
    from cpo_engine.data import example_path, read_triplets
    from cpo_engine.data.storage import is_remote, sha256_path

    cfg = DataConfig.coerce(cfg)
    if cfg.table is not None:
        source = str(cfg.path)
        table = _keep_tasks(read_triplets(cfg.path, cfg.columns), cfg.tasks, source)
        return table, {"path": source, "bundled_example": False, "in_memory": True, "rows": table.num_rows,
                       "sha256": cfg.path.sha256()}
    path: Any = (cfg.path if is_remote(cfg.path) else Path(cfg.path)) if cfg.path else example_path()
    table = _keep_tasks(read_triplets(path, cfg.columns, cfg.score_field), cfg.tasks, str(path))
    info = {"path": str(path), "bundled_example": cfg.path is None, "rows": table.num_rows,
            "sha256": sha256_path(path)}
    return table, info


def _keep_tasks(table: pa.Table, tasks: list[str] | None, source: str) -> pa.Table:
    from cpo_engine.exceptions import DataError

    if not tasks:
        return table
    if "task" not in table.column_names:
        raise DataError("data.tasks is set but the table has no 'task' column", source=source, column="task",
                        fix="drop data.tasks or add a task column")
    table = table.filter(pc.is_in(table["task"], pa.array(tasks)))
    if table.num_rows == 0:
        raise DataError(f"no rows have task in {tasks}", source=source, column="task",
                        fix="check the task names (cpo validate lists them)")
    return table


def scores_and_weights(table: pa.Table) -> tuple[np.ndarray, np.ndarray | None]:
    """The score column as float64, and the ``weight`` column when the table has one (every workflow
    that fits uses both)."""
    y = np.asarray(table.column("score").to_numpy(zero_copy_only=False), dtype=np.float64)
    if "weight" not in table.column_names:
        return y, None
    return y, np.asarray(table.column("weight").to_numpy(zero_copy_only=False), dtype=np.float64)


def write_features(reps: Representations, out: Path) -> dict[str, Path]:
    """Query features X and prompt features T as Parquet, plus both PCA states (safetensors)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"query_features": out / "query_features.parquet", "prompt_features": out / "prompt_features.parquet"}
    atomic_write_parquet(_features_table("query_id", reps.query_ids, "x", reps.X), paths["query_features"])
    atomic_write_parquet(_features_table("prompt_id", reps.prompt_ids, "t", reps.T), paths["prompt_features"])
    reps.save(out)
    paths.update(query_pca=out / "query_pca.safetensors", prompt_pca=out / "prompt_pca.safetensors")
    return paths


def _features_table(id_name: str, ids: np.ndarray, prefix: str, M: np.ndarray) -> pa.Table:
    cols = {id_name: pa.array(ids.astype(str))}
    cols.update({f"{prefix}{j}": pa.array(M[:, j]) for j in range(M.shape[1])})
    return pa.table(cols)


def data_summary(table: pa.Table, reps: Representations) -> dict[str, Any]:
    """Per-prompt mean scores and representation facts, for the report and the console."""
    by_prompt = table.group_by("prompt_id").aggregate([("score", "mean"), ("score", "count")])
    prompts = sorted(({"prompt_id": p, "mean_score": m, "rows": n} for p, m, n in zip(
        by_prompt["prompt_id"].to_pylist(), by_prompt["score_mean"].to_pylist(), by_prompt["score_count"].to_pylist())),
        key=lambda r: -r["mean_score"])
    return {"rows": table.num_rows, "representations": reps.summary(), "prompts": prompts}


def print_summary(summary: dict[str, Any]) -> None:
    r = summary["representations"]
    print(f"{summary['rows']:,} triplets: {r['n_queries']:,} queries x {r['n_prompts']} prompts; "
          f"X: {r['query_components']} PCs ({r['query_explained_variance']:.1%} var), "
          f"T: {r['prompt_components']} PCs ({r['prompt_explained_variance']:.1%} var)")
    for p in summary["prompts"]:
        print(f"  {p['prompt_id']:<12} mean score {p['mean_score']:.3f}  ({p['rows']:,} rows)")


def name_prompts(model: Any, reps: Representations) -> Any:
    """Record the run's prompts on a fitted causal model (their representations and ids), so its per-prompt
    effect table (``model.prompt_effects()``, ``summary()``) names them as the data do."""
    import numpy as np

    model.prompts_T_, model.prompt_ids_ = np.asarray(reps.T, dtype=np.float64), [str(p) for p in reps.prompt_ids]
    return model



def without_queries(table: pa.Table, held: pa.Table | None) -> pa.Table:
    """``table`` less the rows whose query id or query text is one of ``held``'s (the queries a verification
    measures): what a proposer that reads the data (worked examples) may draw from."""
    if held is None:
        return table

    def values(t: pa.Table, col: str) -> list[Any]:
        return t.column(col).cast(pa.string()).to_pylist() if col in t.column_names else [None] * t.num_rows

    ids, texts = set(values(held, "query_id")) - {None}, set(values(held, "query_text")) - {None}
    keep = [q not in ids and t not in texts for q, t in zip(values(table, "query_id"), values(table, "query_text"))]
    return table.filter(pa.array(keep, type=pa.bool_()))


__all__ = ["without_queries", "Manifest", "KINDS", "PARTS_MANIFEST", "write_manifest", "manifest_data", "read_kind", "refuse_other_kind", "open_run",
"usable_folder", "set_aside_previous_run", "load_data", "scores_and_weights", "Representer", "write_features",
"data_summary",
           "print_summary", "now", "name_prompts"]

