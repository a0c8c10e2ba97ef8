"""The configuration of `cpo generate` and `jobs.generate` (its own module, so the Ray pipeline, which takes
it, and the builder, which runs the pipeline, do not import each other)."""

from __future__ import annotations

from dataclasses import dataclass, field

from cpo_engine.exceptions import ConfigError
from cpo_engine.generation.backends import BackendConfig
from cpo_engine.generation.design import DesignConfig
from cpo_engine.generation.graders import get_grader
from cpo_engine.generation.templating import TemplateConfig
from cpo_engine.generation.types import SamplingConfig


@dataclass
class RayConfig:
    """Where and how the Ray executor runs (the ``ray`` section): the cluster, the CPU stages and the
    engine actor pool."""

    address: str | None = None
    """Cluster to attach to ('auto' inside a Ray job); None: RAY_ADDRESS if set, else a local Ray."""
    num_cpus: int | None = None
    """Logical CPUs of a local Ray (None: all). More logical CPUs than cores is fine for I/O-bound stages."""
    cpus_per_task: float = 0.25
    """CPUs reserved by each templating / grading task: fractional so they never starve the engines."""
    batch_size: int = 32
    """Rows per engine call (vLLM schedules them continuously)."""
    num_engines: int = 1
    """Engine actors in the engine stage (each builds its backend once); one per GPU for vLLM."""
    gpus_per_engine: float = 0.0
    """GPUs per engine actor (0 on CPU-only clusters; 1 puts one vLLM engine on each GPU)."""
    cpus_per_engine: float = 1.0
    """Logical CPUs each engine actor reserves; keep it below the node's CPUs so read and templating
    tasks are never starved."""

    def __post_init__(self) -> None:
        for name in ("num_engines", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"ray.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("gpus_per_engine", "cpus_per_engine", "cpus_per_task"):
            if getattr(self, name) < 0:
                raise ConfigError(f"ray.{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class GenerateConfig:
    """Everything `cpo generate` and `jobs.generate` need; read with
    ``cpo_engine.config.load_config(GenerateConfig, path, overrides)``."""

    queries: str | None = None
    """Table with query_id, query_text and the gold column (a triplet table works: deduplicated by
    query_id). None: the bundled example."""
    prompts: str | None = None
    """Table with prompt_id, prompt_text; None: the distinct prompts of the queries table."""
    out: str = "runs/generate"
    """Run folder (manifest.json + shards/); rerunning the same command resumes it."""
    run_id: str = "run"
    """Run label stored in every row and in the row key."""
    gold_column: str = "gold_answer"
    """Column of the queries table holding the gold answer."""
    max_queries: int | None = None
    """Keep only the first N queries (by first appearance)."""
    grader: str = "numeric"
    """Grader spec (see cpo_engine.generation.graders.get_grader)."""
    executor: str = field(default="local", metadata={"choices": ("local", "ray")})
    """'local' (in-process loop) or 'ray' (Ray Data pipeline)."""
    shard_size: int = 64
    """Rows per committed shard (the unit of checkpointing)."""
    prefix_order: bool = True
    """Order requests so inputs sharing a prefix are adjacent (prefix-cache reuse)."""
    overwrite: bool = False
    """Discard an existing run in `out` instead of resuming it."""
    retry_errors: bool = False
    """On resume, run again the rows whose call or grading failed (the new row supersedes the old)."""
    backend: BackendConfig = field(default_factory=BackendConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    template: TemplateConfig = field(default_factory=TemplateConfig)
    design: DesignConfig = field(default_factory=DesignConfig)
    ray: RayConfig = field(default_factory=RayConfig)

    def __post_init__(self) -> None:
        if self.executor not in ("local", "ray"):
            raise ConfigError(f"executor must be 'local' or 'ray', got '{self.executor}'")
        if self.shard_size < 1:
            raise ConfigError(f"shard_size must be >= 1, got {self.shard_size}")
        get_grader(self.grader)  # fail fast on a bad spec


__all__ = ["GenerateConfig", "RayConfig"]
