"""`cpo assign`: a fitted run + a table of unscored queries -> one recommended prompt per query.

The queries stream in batches of ``batch_size``: each batch is embedded (the bundle's encoder, through
the embedding cache, so a rerun embeds nothing twice), projected with the bundle's query PCA, scored
against every candidate prompt by the causal model, and written out; memory is bounded by the batch,
not the input. With ``executor='ray'`` the same policy runs as a Ray Data ``map_batches`` stage over
an actor pool (one loaded encoder per actor, on a GPU when the cluster has them) and Ray writes the
output folder. Inputs and outputs may be local paths, NFS mounts or file system URIs (s3://, gs://).

Outputs: a ``.parquet``, ``.csv`` or ``.jsonl`` file (written whole, then renamed into place), or a
folder of Parquet parts (``part-00000.parquet`` ...; a rerun of the same command skips the parts
already written). Columns: :data:`~cpo_engine.policy.policy.ASSIGNMENT_COLUMNS`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TYPE_CHECKING

import pyarrow as pa

from cpo_engine.exceptions import ConfigError
from cpo_engine.utils import filesystem, is_uri, progress_bar, put_bytes, put_parquet, remove_stale_temps
from cpo_engine.settings import AssignConfig
from cpo_engine.policy.policy import ASSIGNMENT_COLUMNS, Policy

if TYPE_CHECKING:
    from cpo_engine.embedding.config import EmbedConfig

log = logging.getLogger(__name__)

FILE_FORMATS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl"}
PARTS_MARKER = "_assign.json"


@dataclass
class AssignResult:
    """What `cpo assign` did: where it wrote, how many queries, which prompts it recommended."""

    out: str
    n_queries: int
    n_departing: int
    prompt_counts: dict[str, int]
    policy: dict[str, Any]
    seconds: float
    skipped_parts: int = 0
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """A few lines for the console."""
        rate = self.n_queries / self.seconds if self.seconds > 0 else float("nan")
        top = ", ".join(f"{p} {n:,}" for p, n in sorted(self.prompt_counts.items(), key=lambda kv: -kv[1])[:5])
        static = self.policy.get("static_prompt_id")
        share = self.n_departing / self.n_queries if self.n_queries else 0.0
        lines = [f"assigned {self.n_queries:,} queries in {self.seconds:.1f} s ({rate:,.0f} queries/s)"
                 + (f"; {self.skipped_parts} part(s) were already written" if self.skipped_parts else ""),
                 f"recommended prompts: {top}",
                 f"{share:.1%} of queries depart from the static prompt '{static}'"
                 + (" (fallback: the per-query policy is not trusted on this run's data)"
                    if self.policy.get("fallback") else ""),
                 f"wrote {self.out}"]
        return "\n".join(lines + self.notes)


def default_out(queries: str) -> str:
    """``<queries without suffix>.assignment.parquet`` beside a local input."""
    if is_uri(queries):
        raise ConfigError("with a URI input, pass --out (a file or folder URI) for the assignment")
    p = Path(queries.rstrip("/"))
    stem = p.name.split(".")[0] if p.is_file() else p.name
    return str(p.with_name(f"{stem}.assignment.parquet"))


def assign(cfg: AssignConfig, policy: Policy | None = None) -> AssignResult:
    """Recommend a prompt for every query of ``cfg.queries`` with the policy of ``cfg.model``."""
    if not cfg.model or not cfg.queries:
        raise ConfigError("assign needs --model (a `cpo run`/`cpo fit` folder or its model/ bundle) and "
                          "--queries (a table of query_id, query_text)")
    out = cfg.out or default_out(cfg.queries)
    from cpo_engine.data.queries import iter_queries, scan_queries

    n_queries, queries_sha = scan_queries(cfg.queries, columns=cfg.columns)  # rows, valid, unique ids: before any model or output
    if cfg.executor == "ray":
        return record_assignment(cfg, assign_ray(cfg, out))
    t0 = time.perf_counter()
    policy = policy or Policy.load(cfg.model, cfg.policy, embed=cfg.embed, device=cfg.device)
    writer = open_writer(out, identity(cfg, queries_sha, _model_sha(policy)), cfg.overwrite)
    tally, skipped = _Tally(), 0
    bar = progress_bar(n_queries, "assign", " queries")
    try:
        for i, batch in enumerate(iter_queries(cfg.queries, cfg.batch_size, cfg.columns)):
            done = writer.existing(i)
            if done is None:
                done = policy.assign(batch)
                writer.write(i, done)
            else:
                skipped += 1
            tally.add(done)
            bar.update(batch.num_rows)
        writer.close()
    finally:
        bar.close()
        writer.abort()
    return record_assignment(cfg, AssignResult(
        out=out, n_queries=tally.n, n_departing=tally.departing, prompt_counts=dict(tally.counts),
        policy=policy.describe(), seconds=time.perf_counter() - t0, skipped_parts=skipped))


def record_assignment(cfg: AssignConfig, result: AssignResult) -> AssignResult:
    """A folder output gets its manifest (kind 'assign'; ``_manifest.json``, which readers of the Parquet parts
    skip), local or on an object store. A single-file output (.parquet, .csv, .jsonl) is the user's file and
    gets none."""
    from cpo_engine.workflows.common import PARTS_MANIFEST, manifest_data

    if os.path.splitext(result.out.rstrip("/"))[1].lower() in FILE_FORMATS:
        return result
    fs, root = filesystem(result.out)
    data = manifest_data("assign", cfg, {"assignment": "*.parquet"}, n_queries=result.n_queries,
                         n_departing=result.n_departing, policy=result.policy, seconds=round(result.seconds, 3))
    put_bytes(fs, f"{root.rstrip('/')}/{PARTS_MANIFEST}", json.dumps(data, indent=2, default=str).encode())
    return result


@dataclass
class _Tally:
    n: int = 0
    departing: int = 0
    counts: Counter = field(default_factory=Counter)

    def add(self, t: pa.Table) -> None:
        self.n += t.num_rows
        self.departing += int(sum(t.column("departs_from_static").to_pylist()))
        self.counts.update(t.column("recommended_prompt_id").to_pylist())


def identity(cfg: AssignConfig, queries_sha: str | None = None, model_sha: str | None = None) -> dict[str, Any]:
    """What decides a folder output's parts: a rerun resumes only when it matches. Keyed on content (the
    queries' ids and texts, the model bundle's files), not paths: new queries at yesterday's path, or a model
    refitted into the same folder, are another assignment."""
    return {"model": str(cfg.model), "queries": str(cfg.queries), "batch_size": cfg.batch_size,
            "policy": asdict(cfg.policy), "encoder": cfg.embed.encoder, "queries_sha256": queries_sha,
            "model_sha256": model_sha}


def _model_sha(policy: Policy) -> str | None:
    """sha256 of the files of the policy's model bundle (None for a Policy built in memory)."""
    from cpo_engine.utils import sha256_tree

    src = Path(policy.source) if getattr(policy, "source", None) else None
    return sha256_tree(src) if src is not None and src.is_dir() else None


# ---------------------------------------------------------------------------------------- writers


def open_writer(out: str, ident: dict[str, Any], overwrite: bool) -> Any:
    """A file writer for a .parquet/.csv/.jsonl ``out``, a resumable parts writer for a folder."""
    suffix = os.path.splitext(out.rstrip("/"))[1].lower()
    if suffix in FILE_FORMATS:
        return _FileWriter(out, FILE_FORMATS[suffix], overwrite)
    if suffix:
        raise ConfigError(f"--out {out}: use a .parquet, .csv or .jsonl file, or a folder (no suffix) of Parquet parts")
    return _PartsWriter(out, ident, overwrite)


def _pid(text: str) -> int | None:
    return int(text) if text.isdigit() else None


class _FileWriter:
    """One file, streamed batch by batch into a temp file that is renamed into place at the end (on an
    object store the upload is committed when the stream closes)."""

    def __init__(self, out: str, fmt: str, overwrite: bool) -> None:
        import pyarrow.fs as pafs

        self.fs, self.path = filesystem(out)
        if not overwrite and self.fs.get_file_info(self.path).type != pafs.FileType.NotFound:
            raise ConfigError(f"{out} already exists: pass --overwrite to replace it, or another --out")
        self.fmt, self.local = fmt, isinstance(self.fs, pafs.LocalFileSystem)
        parent = os.path.dirname(self.path)
        if self.local:
            Path(parent).mkdir(parents=True, exist_ok=True)
            name = os.path.basename(self.path)  # a killed writer's .NAME.<pid>.tmp goes, a live one's stays
            remove_stale_temps(parent, f".{name}.*.tmp", writer_pid=lambda f: _pid(f.name[len(name) + 2:-4]))
        self.tmp = f"{parent}/.{os.path.basename(self.path)}.{os.getpid()}.tmp" if self.local else self.path
        self.stream, self.writer = self.fs.open_output_stream(self.tmp), None

    def existing(self, i: int) -> None:
        return None  # a single file is rewritten whole; the embedding cache makes a rerun cheap

    def write(self, i: int, table: pa.Table) -> None:
        if self.fmt == "jsonl":
            self.stream.write("".join(json.dumps(r) + "\n" for r in table.to_pylist()).encode())
            return
        if self.writer is None:
            import pyarrow.csv as pacsv
            import pyarrow.parquet as pq

            self.writer = (pq.ParquetWriter(self.stream, table.schema, compression="zstd") if self.fmt == "parquet"
                           else pacsv.CSVWriter(self.stream, table.schema))
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.stream.close()
        if self.local:
            from cpo_engine.utils import current_umask

            os.chmod(self.tmp, 0o666 & ~current_umask())
            os.replace(self.tmp, self.path)
        self.stream = None

    def abort(self) -> None:
        """After a failure: drop the temp file (nothing half-written is left at ``out``)."""
        if self.stream is not None:
            self.stream.close()
            if self.local and os.path.exists(self.tmp):
                os.unlink(self.tmp)


class _PartsWriter:
    """A folder of ``part-NNNNN.parquet`` files, one per input batch, each written atomically; a rerun
    with the same identity skips the parts already there."""

    def __init__(self, out: str, ident: dict[str, Any], overwrite: bool) -> None:
        import pyarrow.fs as pafs

        self.fs, self.root = filesystem(out)
        self.fs.create_dir(self.root, recursive=True)
        marker = f"{self.root}/{PARTS_MARKER}"
        if self.fs.get_file_info(marker).type == pafs.FileType.File:
            with self.fs.open_input_stream(marker) as f:
                old = json.loads(f.read().decode())
            if old != ident and not overwrite:
                what = [k for k in ("model_sha256", "queries_sha256", "model", "queries", "batch_size", "policy",
                                    "encoder") if old.get(k) != ident.get(k)]
                raise ConfigError(f"{out} holds parts of another assignment ({', '.join(what) or 'its settings'} "
                                  "differ: new queries or a refitted model at the same path count as another "
                                  "assignment): pass --overwrite, or another --out")
            if old != ident:
                self.fs.delete_dir_contents(self.root)
        put_bytes(self.fs, marker, json.dumps(ident, indent=2).encode())
        self.done = {f.base_name for f in self.fs.get_file_info(pafs.FileSelector(self.root))}

    def _name(self, i: int) -> str:
        return f"part-{i:05d}.parquet"

    def existing(self, i: int) -> pa.Table | None:
        import pyarrow.parquet as pq

        if self._name(i) not in self.done:
            return None
        return pq.read_table(f"{self.root}/{self._name(i)}", filesystem=self.fs,
                             columns=["recommended_prompt_id", "departs_from_static"])

    def write(self, i: int, table: pa.Table) -> None:
        put_parquet(self.fs, f"{self.root}/{self._name(i)}", table)

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


# ---------------------------------------------------------------------------------------- Ray Data


class AssignStage:
    """Ray Data actor: loads the policy (and its encoder) once in ``__init__``, assigns a batch per call."""

    def __init__(self, model: str, policy: Any, embed: EmbedConfig, device: str) -> None:
        import warnings

        with warnings.catch_warnings():  # the driver already warned once
            warnings.simplefilter("ignore")
            self.policy = Policy.load(model, policy, embed=embed, device=device, warn=False)

    def __call__(self, batch: pa.Table) -> pa.Table:
        from cpo_engine.data.queries import validate_queries

        return self.policy.assign(validate_queries(batch, "a batch of the queries"))


def assign_ray(cfg: AssignConfig, out: str) -> AssignResult:
    """The Ray Data path: read -> ``map_batches(AssignStage)`` over an actor pool -> write_parquet(out)."""
    from cpo_engine.distributed import ensure_ray

    t0 = time.perf_counter()
    policy = Policy.load(cfg.model, cfg.policy, embed=cfg.embed, device=cfg.device)  # warns, fails fast
    ray = ensure_ray(cfg.ray.address, cfg.ray.num_cpus)
    gpus = cfg.ray.gpus_per_actor
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    ds = _read(ray, cfg.queries, cfg.columns)
    extra = {"num_gpus": gpus} if gpus else {}
    ds = ds.map_batches(AssignStage, fn_constructor_kwargs={"model": cfg.model, "policy": cfg.policy,
                                                            "embed": cfg.embed, "device": cfg.device},
                        batch_size=cfg.batch_size, batch_format="pyarrow", concurrency=cfg.ray.num_actors,
                        num_cpus=cfg.ray.cpus_per_actor, **extra)
    ds.write_parquet(out)
    # tally from what was written (two small columns), so the driver never holds the assignment
    tally = ray.data.read_parquet(out, columns=["recommended_prompt_id", "departs_from_static"]).groupby(
        ["recommended_prompt_id", "departs_from_static"]).count().to_pandas()
    prompt_counts: Counter = Counter()
    n_dep = 0
    for pid, departs, n in tally.itertuples(index=False):
        prompt_counts[str(pid)] += int(n)
        n_dep += int(n) if departs else 0
    return AssignResult(out=out, n_queries=int(sum(prompt_counts.values())), n_departing=n_dep,
                        prompt_counts=dict(prompt_counts), policy=policy.describe(), seconds=time.perf_counter() - t0,
                        notes=[f"ray: {cfg.ray.num_actors} actor(s), {gpus:g} GPU(s) each; OUT is a folder of "
                               "Parquet files"])


def _read(ray: Any, path: str, columns: Any = None) -> Any:
    """The input as a Ray Dataset of ``query_id, query_text`` (ids and texts as strings; the user's column
    names mapped to ours, ids derived from the texts when the table has none)."""
    import pyarrow.csv as pacsv

    from cpo_engine.data.columns import DERIVED_IDS, apply_columns, user_names
    from cpo_engine.data.io import column_names
    from cpo_engine.data.queries import COLUMNS, plan_columns, query_columns, query_dataset

    columns = query_columns(columns)
    qds = query_dataset(path, columns)  # validates the path and its format
    read = plan_columns(column_names(qds.schema, path), columns, path)
    fmt = getattr(qds.format, "default_extname", "")
    if fmt == "parquet":
        ds = ray.data.read_parquet(path)
    elif fmt == "json":
        ds = ray.data.read_json(path)
    else:
        delimiter = "\t" if path.rstrip("/").lower().endswith(".tsv") else ","
        ds = ray.data.read_csv(path, parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
                               convert_options=pacsv.ConvertOptions(
                                   column_types={c: pa.string() for c in user_names(columns, COLUMNS).values()},
                                   strings_can_be_null=False))
    ds = ds.select_columns(read)
    if read == list(COLUMNS) and not columns:
        return ds
    return ds.map_batches(lambda b: apply_columns(b, columns, path, DERIVED_IDS[:1]).select(list(COLUMNS)),
                          batch_format="pyarrow")


__all__ = ["assign", "assign_ray", "AssignResult", "AssignStage", "default_out", "open_writer", "ASSIGNMENT_COLUMNS"]
