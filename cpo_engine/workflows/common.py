"""Steps every workflow shares: the run folder's manifest, reading the data, building representations."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cpo_engine.data.config import DataConfig
from cpo_engine.embedding.config import EmbedConfig, PCAConfig
from cpo_engine.utils import atomic_write_json, atomic_write_parquet, device_info, sha256_file, versions

log = logging.getLogger(__name__)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Manifest:
    """A run folder's manifest.json, rewritten after every stage so a crash leaves a true record; a run
    that raises is recorded as ``failed`` with its error."""

    def __init__(self, run_dir: Path, cfg: Any) -> None:
        self.run_dir = run_dir
        self.data: dict[str, Any] = {"config": asdict(cfg), "versions": versions(), "device": device_info(),
                                     "started_at": now(), "status": "running", "timings_s": {}, "outputs": {}}
        self.write()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        log.info("stage %s ...", name)
        t0 = time.perf_counter()
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

    def output(self, key: str, path: Path) -> None:
        self.data["outputs"][key] = str(Path(path).relative_to(self.run_dir))

    def write(self) -> None:
        atomic_write_json(self.run_dir / "manifest.json", self.data)


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


def scores_and_weights(table: pa.Table) -> tuple[np.ndarray, np.ndarray | None]:
    """The score column as float64, and the ``weight`` column when the table has one (every workflow
    that fits uses both)."""
    y = np.asarray(table.column("score").to_numpy(zero_copy_only=False), dtype=np.float64)
    if "weight" not in table.column_names:
        return y, None
    return y, np.asarray(table.column("weight").to_numpy(zero_copy_only=False), dtype=np.float64)


class Representer:
    """The run's encoder and embedding cache, built once and shared by every step that embeds (the
    representations of the table, then the candidate prompts of the search)."""

    def __init__(self, embed: EmbedConfig, cache_dir: Any = "config", encoder: Any = None) -> None:
        from cpo_engine.distributed import ensure_ray
        from cpo_engine.embedding import encoder_and_cache

        self.cfg = embed
        # embed.executor 'auto' sends big batches to Ray only when this process runs on a Ray cluster
        self.encoder, self.cache = encoder_and_cache(embed, cache_dir, connect=ensure_ray)
        if encoder is not None:  # an already loaded encoder of the same model (tests, long-lived workers)
            self.encoder = encoder

    def represent(self, table: pa.Table, pca: PCAConfig | None = None, *, query_pca: Any = None,
                  prompt_pca: Any = None, show_progress: bool = True) -> Any:
        """Embeddings through the cache, then the two PCAs (fitted here, or a bundle's fitted ones)."""
        from cpo_engine.embedding import build_representations

        pca = pca or PCAConfig()
        e = self.cfg
        return build_representations(table, encoder=self.encoder, cache=self.cache,
                                     query_components=pca.query_components, prompt_components=pca.prompt_components,
                                     query_prefix=e.query_prefix, prompt_prefix=e.prompt_prefix, device=e.device,
                                     show_progress=show_progress, query_pca=query_pca, prompt_pca=prompt_pca,
                                     pca_backend=pca.backend)

    def prompt_embedder(self, reps: Any) -> Any:
        """texts -> T in the representations' prompt PCA space (for new candidate prompts)."""
        from cpo_engine.embedding import text_embedder

        prefix = reps.provenance.get("prompt_prefix", "") or ""
        return text_embedder(self.encoder, self.cache, reps.prompt_pca, prefix)


def write_features(reps: Any, out: Path) -> dict[str, Path]:
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


def data_summary(table: pa.Table, reps: Any) -> dict[str, Any]:
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


__all__ = ["Manifest", "load_data", "scores_and_weights", "Representer", "write_features", "data_summary",
           "print_summary", "now"]
