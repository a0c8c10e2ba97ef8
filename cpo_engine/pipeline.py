"""The end-to-end job behind `cpo run` and the Ray `jobs/`: one function per stage, a run folder
with a manifest (config, versions, data hash, timings) rewritten atomically after every stage."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cpo_engine.config import DataConfig, RunConfig, to_dict
from cpo_engine.embedding import EmbeddingCache, Representations, build_representations, make_encoder
from cpo_engine.utils import atomic_write_json, atomic_write_parquet, device_info, sha256_file, versions

log = logging.getLogger(__name__)


class Manifest:
    """The run folder's manifest.json, rewritten after every stage so a crash leaves a true record."""

    def __init__(self, run_dir: Path, cfg: RunConfig) -> None:
        self.run_dir = run_dir
        self.data: dict[str, Any] = {"config": to_dict(cfg), "versions": versions(), "device": device_info(),
                                     "started_at": _now(), "status": "running", "timings_s": {}, "outputs": {}}
        self.write()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        log.info("stage %s ...", name)
        t0 = time.perf_counter()
        yield
        self.data["timings_s"][name] = round(time.perf_counter() - t0, 3)
        log.info("stage %s done in %.1f s", name, self.data["timings_s"][name])
        self.write()

    def output(self, key: str, path: Path) -> None:
        self.data["outputs"][key] = str(path.relative_to(self.run_dir))

    def write(self) -> None:
        atomic_write_json(self.run_dir / "manifest.json", self.data)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def load_data(cfg: DataConfig) -> tuple[pa.Table, dict[str, Any]]:
    """Read and validate the configured table (the bundled example when no path is set)."""
    from cpo_engine.data import example_path, read_triplets
    from cpo_engine.exceptions import DataError

    path = Path(cfg.path) if cfg.path else example_path()
    table = read_triplets(path)
    if cfg.tasks:
        if "task" not in table.column_names:
            raise DataError("data.tasks is set but the table has no 'task' column", source=str(path), column="task",
                            fix="drop data.tasks or add a task column")
        table = table.filter(pc.is_in(table["task"], pa.array(cfg.tasks)))
        if table.num_rows == 0:
            raise DataError(f"no rows have task in {cfg.tasks}", source=str(path), column="task",
                            fix="check the task names (cpo validate lists them)")
    info = {"path": str(path), "bundled_example": cfg.path is None, "rows": table.num_rows,
            "sha256": sha256_file(path) if path.is_file() else _dir_hash(path)}
    return table, info


def _dir_hash(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for f in sorted(path.rglob("*.parquet")):
        h.update(f.relative_to(path).as_posix().encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def embed_stage(table: pa.Table, cfg: RunConfig, show_progress: bool = True) -> Representations:
    """Embeddings through the cache, then the two PCAs."""
    e = cfg.embed
    encoder = make_encoder(e.encoder, device=e.device, batch_size=e.batch_size, num_threads=e.num_threads)
    cache = EmbeddingCache(e.cache_dir) if e.cache_dir else None
    return build_representations(table, encoder=encoder, cache=cache,
                                 query_components=cfg.pca.query_components,
                                 prompt_components=cfg.pca.prompt_components,
                                 query_prefix=e.query_prefix, prompt_prefix=e.prompt_prefix, device=e.device,
                                 show_progress=show_progress)


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


def run_job(cfg: RunConfig) -> dict[str, Any]:
    """`cpo run`: data -> validation -> embeddings -> PCA -> summary -> search (split, fit, pool mode, generative
    search, report), in a run folder."""
    run_dir = Path(cfg.out or f"runs/{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(run_dir, cfg)
    with manifest.stage("data"):
        table, info = load_data(cfg.data)
        manifest.data["data"] = info
    with manifest.stage("embed_pca"):
        reps = embed_stage(table, cfg)
        for key, path in write_features(reps, run_dir / "features").items():
            manifest.output(key, path)
    with manifest.stage("summary"):
        summary = data_summary(table, reps)
        atomic_write_json(run_dir / "summary.json", summary)
        manifest.output("summary", run_dir / "summary.json")
        _print_summary(summary)
    search = search_stage(table, reps, cfg, run_dir, manifest)
    manifest.data.update(status="ok", finished_at=_now())
    manifest.write()
    return {"run_dir": run_dir, "summary": summary, "representations": reps, "table": table, "search": search}


def search_stage(table: pa.Table, reps: Representations, cfg: RunConfig, run_dir: Path,
                 manifest: Manifest) -> dict[str, Any]:
    """Query split -> causal fit -> pool mode on held-out queries -> generative search -> outputs + report."""
    from cpo_engine.search.stage import print_findings, run_search_stage

    with manifest.stage("search"):
        search = run_search_stage(table, reps, cfg, run_dir, cfg.search)
        for key, path in search["paths"].items():
            manifest.output(f"search.{key}", path)
        manifest.data["search"] = {k: search["evaluation"][k] for k in
                                   ("static_prompt_id", "incumbent_prompt_id", "static_rank_agreement",
                                    "n_train_queries", "n_test_queries")}
        manifest.data["search"]["causal_diagnostics"] = search["evaluation"]["diagnostics"]
        print_findings(search)
    return search


def _print_summary(summary: dict[str, Any]) -> None:
    r = summary["representations"]
    print(f"{summary['rows']:,} triplets: {r['n_queries']:,} queries x {r['n_prompts']} prompts; "
          f"X: {r['query_components']} PCs ({r['query_explained_variance']:.1%} var), "
          f"T: {r['prompt_components']} PCs ({r['prompt_explained_variance']:.1%} var)")
    for p in summary["prompts"]:
        print(f"  {p['prompt_id']:<12} mean score {p['mean_score']:.3f}  ({p['rows']:,} rows)")


__all__ = ["run_job", "load_data", "embed_stage", "write_features", "data_summary", "Manifest"]
