"""Ray Data pipeline for generation: CPU templating -> engine actor pool -> CPU grading.

The layout of ``ray.data.llm``: one ``map_batches`` stage per step, each with its own resources.
Templating and grading are stateless tasks with fractional CPUs; the engine stage is an actor
pool of :class:`~cpo_engine.generation.stages.EngineStage` (each actor builds its backend once:
one vLLM engine per GPU, or one HTTP client pool). Rows enter in prefix order and order is
preserved, so each engine batch holds neighbours that share prefixes. Batches stream back to
the driver, which commits each as a shard: the Ray path checkpoints exactly like the local one.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Iterator

import pyarrow as pa

from cpo_engine.generation.stages import EngineStage, grade, render
from cpo_engine.utils import require

if TYPE_CHECKING:
    from cpo_engine.generation.builder import GenerateConfig, RayConfig

log = logging.getLogger(__name__)


def ensure_ray(cfg: "RayConfig") -> Any:
    """Attach to a cluster or start a local Ray.

    ``address`` set, or ``RAY_ADDRESS`` in the environment (inside a Ray job): attach. Otherwise a
    local Ray with ``num_cpus`` logical CPUs and no dashboard.
    """
    ray = require("ray", extra="ray")
    if ray.is_initialized():
        return ray
    if cfg.address:
        ray.init(address=cfg.address, log_to_driver=False)
    elif os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=False)
    else:
        ray.init(num_cpus=cfg.num_cpus, include_dashboard=False, log_to_driver=False)
    return ray


def build_dataset(todo: pa.Table, cfg: "GenerateConfig") -> Any:
    """The lazy three-stage dataset (nothing runs until it is iterated)."""
    ray = ensure_ray(cfg.ray)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    b, r = cfg.backend, cfg.ray
    n_blocks = max(1, -(-todo.num_rows // r.batch_size))
    ds = ray.data.from_arrow(todo).repartition(n_blocks)
    ds = ds.map_batches(render, fn_kwargs={"template": cfg.template, "sampling": cfg.sampling},
                        batch_format="pyarrow", batch_size=r.batch_size, num_cpus=r.cpus_per_task)
    engine_args: dict[str, Any] = {"num_cpus": b.cpus_per_engine}
    if b.gpus_per_engine:
        engine_args["num_gpus"] = b.gpus_per_engine
    ds = ds.map_batches(EngineStage, fn_constructor_kwargs={"backend": b, "sampling": cfg.sampling},
                        batch_format="pyarrow", batch_size=r.batch_size, concurrency=b.num_engines, **engine_args)
    return ds.map_batches(grade, fn_kwargs={"grader_spec": cfg.grader}, batch_format="pyarrow",
                          batch_size=r.batch_size, num_cpus=r.cpus_per_task)


def ray_generate(todo: pa.Table, cfg: "GenerateConfig") -> Iterator[pa.Table]:
    """Stream graded rows back in batches of ``cfg.shard_size`` (each becomes one shard)."""
    ds = build_dataset(todo, cfg)
    for batch in ds.iter_batches(batch_size=cfg.shard_size, batch_format="pyarrow"):
        yield batch


__all__ = ["ensure_ray", "build_dataset", "ray_generate"]
