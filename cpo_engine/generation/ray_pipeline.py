"""Ray Data pipeline for generation: CPU templating -> engine actor pool -> CPU grading.

The layout of ``ray.data.llm``: one ``map_batches`` stage per step, each with its own resources.
Templating and grading are stateless tasks with fractional CPUs; the engine stage is an actor
pool of :class:`~cpo_engine.generation.stages.EngineStage` (each actor builds its backend once:
one vLLM engine per GPU, or one HTTP client pool), sized by ``ray.num_engines``,
``ray.gpus_per_engine`` and ``ray.cpus_per_engine``. Rows enter in prefix order and order is
preserved, so each engine batch holds neighbours that share prefixes. Batches stream back to the
driver, which commits each as a shard: the Ray path checkpoints exactly like the local one.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Iterator

import pyarrow as pa

from cpo_engine.distributed import ensure_ray
from cpo_engine.generation.stages import EngineStage, grade, render

if TYPE_CHECKING:
    from cpo_engine.generation.config import GenerateConfig

log = logging.getLogger(__name__)


def build_dataset(todo: pa.Table, cfg: "GenerateConfig") -> Any:
    """The lazy three-stage dataset (nothing runs until it is iterated)."""
    r = cfg.ray
    ray = ensure_ray(r.address, r.num_cpus)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    n_blocks = max(1, -(-todo.num_rows // r.batch_size))
    ds = ray.data.from_arrow(todo).repartition(n_blocks)
    ds = ds.map_batches(render, fn_kwargs={"template": cfg.template, "sampling": cfg.sampling},
                        batch_format="pyarrow", batch_size=r.batch_size, num_cpus=r.cpus_per_task)
    engine_args: dict[str, Any] = {"num_cpus": r.cpus_per_engine}
    if r.gpus_per_engine:
        engine_args["num_gpus"] = r.gpus_per_engine
    ds = ds.map_batches(EngineStage, fn_constructor_kwargs={"backend": cfg.backend, "sampling": cfg.sampling},
                        batch_format="pyarrow", batch_size=r.batch_size, concurrency=r.num_engines, **engine_args)
    return ds.map_batches(grade, fn_kwargs={"grader_spec": cfg.grader}, batch_format="pyarrow",
                          batch_size=r.batch_size, num_cpus=r.cpus_per_task)


def ray_generate(todo: pa.Table, cfg: "GenerateConfig") -> Iterator[pa.Table]:
    """Stream graded rows back in batches of ``cfg.shard_size`` (each becomes one shard)."""
    ds = build_dataset(todo, cfg)
    for batch in ds.iter_batches(batch_size=cfg.shard_size, batch_format="pyarrow"):
        yield batch


__all__ = ["build_dataset", "ray_generate"]
