"""Configurations of the workflows and commands (the `settings` room, between `policy` and `workflows`): each
composes the rooms' own dataclasses, so a knob has one default wherever it is used (`cpo run`, `cpo fit`,
`cpo optimize`, `cpo evaluate`, `cpo nightly`, ...). The command modules build their flags from these
dataclasses (name, type, choices, default and help: `commands._flags`), and the workflows take them; no
class of a workflow module is imported by another room.

Precedence everywhere: defaults < --config file < --set section.key=value < command-line flags
(each flag is sugar for one --set key).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cpo_engine.causal.config import CausalConfig
from cpo_engine.causal.budget import SweepConfig
from cpo_engine.causal.evaluation import EvaluationConfig
from cpo_engine.causal.ope import OPEConfig
from cpo_engine.data.config import DataConfig
from cpo_engine.edits.config import EffectConfig, PairConfig, PriorConfig
from cpo_engine.embedding.config import EmbedConfig, PCAConfig
from cpo_engine.exceptions import ConfigError
from cpo_engine.generation.backends import BackendConfig
from cpo_engine.generation.config import RayConfig
from cpo_engine.generation.local_server import LocalServerConfig
from cpo_engine.generation.tasks import TaskConfig
from cpo_engine.generation.templating import TemplateConfig
from cpo_engine.search.config import AUTO_PROPOSER, BeamConfig, ProposerConfig, SelectionConfig
from cpo_engine.policy.config import CANDIDATE_SETS, PolicyConfig  # noqa: F401 (RunConfig.policy; re-exported)
from cpo_engine.search.proposers import proposer_names, proposer_spec

@dataclass
class HoldoutConfig:
    """How `cpo run` holds queries out to check its choices against recorded outcomes."""

    test_fraction: float = 0.3
    """Share of query texts held out (never fitted on) to evaluate the per-query choice."""
    simulate_confounding: str | None = None
    """None: fit on the training queries' rows as logged. 'observable' or 'latent' (full-grid data
    only): fit on logs drawn from them with a known query-dependent logging policy (elaborate prompts
    for long or hard queries), to see the causal and non-causal models differ under confounding."""
    confounding_strength: float = 2.0
    """Logit scale of the simulated logging policy."""
    logged_per_query: int = 4
    """Simulated logged rows per training query."""
    n_tiers: int = 3
    """Query-difficulty tiers in the report (difficulty: the query's mean recorded score over prompts)."""

    def __post_init__(self) -> None:
        if not 0 < self.test_fraction < 1:
            raise ConfigError(f"holdout.test_fraction must be in (0, 1), got {self.test_fraction}")
        if self.simulate_confounding not in (None, "observable", "latent"):
            raise ConfigError("holdout.simulate_confounding must be null, 'observable' or 'latent', got "
                              f"'{self.simulate_confounding}'")
        if self.logged_per_query < 1 or self.n_tiers < 1:
            raise ConfigError("holdout.logged_per_query and holdout.n_tiers must be >= 1")


@dataclass
class TrackingConfig:
    """Where a finished run is also recorded (the ``tracking`` section): MLflow, for teams that track runs there
    (the ``mlflow`` extra; docs/mlflow.md)."""

    mlflow_uri: str | None = field(default=None, metadata={"help": (
        "MLflow tracking URI (e.g. sqlite:///mlflow.db, http://mlflow:5000, databricks): log the finished folder's "
        "config as parameters, its values, intervals and timings as metrics, the folder as artifacts, and register "
        "the recommended or promoted prompt in MLflow's prompt registry; 'env': the URI in MLFLOW_TRACKING_URI. "
        "None: no MLflow")})
    experiment: str = "cpo"
    """MLflow experiment the runs are logged in (created when missing)."""
    prompt_name: str = "cpo-prompt"
    """Name of the prompt in MLflow's prompt registry; each prompt a run recommends or a night promotes becomes a
    version of it (a version equal to the latest one is not repeated)."""

    def __post_init__(self) -> None:
        import re
        from urllib.parse import urlsplit

        uri = self.mlflow_uri
        if uri is not None and uri != "env" and urlsplit(uri).password:
            raise ConfigError("tracking.mlflow_uri holds a password, which would be written to the run's manifest.json: "
                              "keep secrets off disk\n  fix: for an MLflow server set MLFLOW_TRACKING_USERNAME and "
                              "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) in the environment; for a database "
                              "store put the URI in MLFLOW_TRACKING_URI and pass --mlflow env")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.prompt_name):
            raise ConfigError(f"tracking.prompt_name must hold only letters, digits, '_', '-' and '.' (MLflow's rule for "
                              f"prompt names), got '{self.prompt_name}'")


EXECUTORS = ("local", "ray")


@dataclass
class LLMConfig:
    """The LLM that runs prompts for real (the ``generation`` section): the verify stage of `cpo run`,
    `cpo optimize`, `cpo nightly` and `cpo verify`, and the generation steps of `cpo loop`. Leaving the
    section unset (null) means no LLM is available: no verify stage, every uplift stays predicted."""

    backend: BackendConfig = field(default_factory=BackendConfig)
    """Which backend runs the prompts (openai: vLLM serve / llama.cpp server / hosted; vllm; replay)."""
    template: TemplateConfig = field(default_factory=TemplateConfig)
    """How query and prompt become one LLM input (as `cpo generate`)."""
    grader: str = "numeric"
    """Grader spec scoring each answer against the gold column (as `cpo generate`)."""
    temperature: float = 0.0
    """Sampling temperature (0: greedy; samples of a cell then agree)."""
    executor: str = field(default="local", metadata={"choices": EXECUTORS})
    """'local' (in-process) or 'ray' (Ray Data pipeline, engines in actors)."""
    ray: RayConfig = field(default_factory=RayConfig)
    """Cluster and actor-pool sizes of the 'ray' executor."""
    shard_size: int = 32
    """Rows per committed shard (the resume unit)."""

    def __post_init__(self) -> None:
        from cpo_engine.generation.graders import get_grader

        if self.executor not in ("local", "ray"):
            raise ConfigError(f"generation.executor must be 'local' or 'ray', got '{self.executor}'")
        if self.temperature < 0 or self.shard_size < 1:
            raise ConfigError("generation.temperature must be >= 0 and generation.shard_size >= 1")
        get_grader(self.grader)


@dataclass
class VerifyConfig:
    """The verify stage: run the recommended prompts with the LLM on held-out queries (``verify``)."""

    enabled: bool = True
    """Run the stage whenever a ``generation`` section is configured (false: skip it)."""
    queries: str | None = None
    """Held-out queries to run (query_id, query_text and the gold column). None: the run's held-out
    split (`cpo run`), the table's queries (`cpo optimize`), tonight's queries (`cpo nightly`)."""
    gold_column: str = "gold_answer"
    """Column holding the gold answer the grader compares with."""
    max_queries: int = 40
    """Queries sampled for verification (budget)."""
    samples: int = 1
    """LLM samples per (query, prompt) cell (budget)."""
    max_tokens: int = 32
    """Most tokens generated per call (budget)."""
    top_k: int = 3
    """Searched prompts verified (best static objective first), besides the incumbent and best static."""
    seeds: str = "best"
    """Logged prompts verified: 'best' (the incumbent and the best static prompt) or 'all'."""
    incumbent: str | None = None
    """Prompt id of the incumbent every arm is measured against (a logged prompt of the run's table). None:
    the run's (the logged prompt its model ranks best). `cpo loop` sets it: the seed with the best mean over
    all training queries in round 0, then the previous round's promoted prompt or incumbent."""
    margin: float = 0.0
    """Promotion rule (`cpo nightly`): a new prompt or policy goes live only when the lower end of the
    95% interval of its measured uplift over the live one is >= margin."""
    append_to: str | None = None
    """A folder (a Parquet-folder data path) the verified triplets are appended to, so the next fit
    learns from them; None: they stay in the run's verify/ folder."""
    seed: int = 0
    """Seed of the query sample, and of the order the sequential design runs the queries in."""
    design: str = "fixed"
    """'fixed': every prompt on every sampled query, then 95% paired intervals. 'sequential': batches of
    queries, each candidate's anytime-valid confidence sequence updated after each, a candidate stopped once
    decided or the budget spent; false promotions <= alpha over all candidates (docs/verification.md)."""
    alpha: float = 0.05
    """Sequential design: the false-promotion level over all candidates verified."""
    max_calls: int | None = None
    """Sequential design: the LLM-call budget (None: what the fixed design spends, max_queries x prompts x
    samples)."""
    batch: int = 10
    """Sequential design: queries per look (one generation batch)."""
    assumed_sd: float = 0.5
    """Sequential design: the sd of a paired difference assumed by the power statement printed before
    spending ("with this budget you can detect an uplift of X or more")."""

    def __post_init__(self) -> None:
        for name in ("max_queries", "samples", "max_tokens", "batch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"verify.{name} must be >= 1, got {getattr(self, name)}")
        if self.top_k < 0:
            raise ConfigError(f"verify.top_k must be >= 0, got {self.top_k}")
        if self.seeds not in ("best", "all"):
            raise ConfigError(f"verify.seeds must be 'best' or 'all', got '{self.seeds}'")
        if self.design not in ("fixed", "sequential"):
            raise ConfigError(f"verify.design must be 'fixed' or 'sequential', got '{self.design}'")
        if not 0 < self.alpha < 1 or self.assumed_sd <= 0 or (self.max_calls is not None and self.max_calls < 1):
            raise ConfigError(f"verify.alpha must be in (0, 1), verify.assumed_sd > 0 and verify.max_calls >= 1; got "
                              f"{self.alpha}, {self.assumed_sd}, {self.max_calls}")


@dataclass
class VerifyJobConfig:
    """`cpo verify`: run a `cpo run` or `cpo optimize` folder's recommendations with the LLM."""

    run: str | None = None
    """The folder to verify (`cpo run --out RUN`, or `cpo optimize --out OUT`)."""
    data: DataConfig = field(default_factory=DataConfig)
    """The triplet table the folder was made from (default: the one its manifest or inputs name)."""
    model: str | None = None
    """Model bundle (default: the folder's own, or the one `cpo optimize` recorded)."""
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    generation: LLMConfig = field(default_factory=LLMConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    """Where the verification is also recorded (MLflow)."""

    def __post_init__(self) -> None:
        self.data = DataConfig.coerce(self.data)


def _loop_llm() -> LLMConfig:
    from cpo_engine.generation.backends import OpenAIConfig

    # llama.cpp's server answers one request at a time: a deep queue would only time out. Worked examples a
    # searched prompt adds go to the chat as earlier turns (the seed prompts have none: they render the same).
    return LLMConfig(backend=BackendConfig(openai=OpenAIConfig(max_concurrency=2, timeout_s=120.0)),
                     template=TemplateConfig(position="prefix", demos="turns"))


def _loop_verify() -> VerifyConfig:
    # sequential: a prompt far from the incumbent (most seeds) stops after a few looks, so 200 queries a round
    # cost far less than 200 x prompts calls, and the verdicts stay valid however often the loop looks
    return VerifyConfig(max_tokens=16, seeds="all", design="sequential")


def _loop_beam() -> BeamConfig:
    return BeamConfig(rounds=2, beam_width=6, children_per_beam=12)


@dataclass
class LoopConfig:
    """`cpo loop`: the whole loop on a real LLM: generate triplets for seed prompts -> fit -> search ->
    verify with the LLM on fresh held-out queries -> report; each further round fits on the verified
    triplets too. Rerunning the same command resumes it."""

    out: str = "runs/loop"
    """Loop folder (task data, training triplets, one `cpo run` folder per round, loop_report.*)."""
    task: TaskConfig = field(default_factory=TaskConfig)
    prompts: str | None = None
    """Seed prompts table (prompt_id, prompt_text); None: the task's seed prompts."""
    rounds: int = 1
    """Fit -> search -> verify rounds; round r also learns from the triplets verified in rounds < r."""
    endpoint: str | None = None
    """OpenAI-compatible endpoint of the LLM; None (with backend kind openai): start the packaged
    SmolLM2-135M-Instruct on a local llama.cpp server for the duration of the loop."""
    max_calls: int | None = None
    """Stop after this many LLM calls in all (calls made by earlier runs of the loop count); a rerun with a
    larger cap continues without repeating a call. None: no cap (the loop prints its maximum first)."""
    server: LocalServerConfig = field(default_factory=LocalServerConfig)
    generation: LLMConfig = field(default_factory=_loop_llm)
    """Backend, template (default: the prompt before the query) and grader of every LLM call."""
    verify: VerifyConfig = field(default_factory=_loop_verify)
    """Budget of every LLM call (max_tokens, samples) and of the verification (queries, top_k)."""
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    pca: PCAConfig = field(default_factory=PCAConfig)
    causal: CausalConfig = field(default_factory=CausalConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    beam: BeamConfig = field(default_factory=_loop_beam)
    proposer: ProposerConfig = field(default_factory=ProposerConfig)
    holdout: HoldoutConfig = field(default_factory=lambda: HoldoutConfig(test_fraction=0.25))
    seed: int = 0
    """Seed of the fit, the search and the samplers."""

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ConfigError(f"rounds must be >= 1, got {self.rounds}")
        if self.max_calls is not None and self.max_calls < 0:
            raise ConfigError(f"max_calls must be >= 0, got {self.max_calls}")
        if not proposer_spec(self.proposer.kind).generative:
            raise ConfigError("the loop searches new prompts: proposer.kind must be one of "
                              f"{', '.join(proposer_names(generative=True))}")


@dataclass
class RunConfig:
    """`cpo run`: data -> representations -> causal model -> selection and search -> report."""

    data: DataConfig = field(default_factory=DataConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    pca: PCAConfig = field(default_factory=PCAConfig)
    causal: CausalConfig = field(default_factory=CausalConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    beam: BeamConfig = field(default_factory=BeamConfig)
    proposer: ProposerConfig = field(default_factory=lambda: ProposerConfig(kind=AUTO_PROPOSER))
    """The generative search; its kind 'auto' (the default) searches ('edit') only when an LLM is configured to
    verify what it finds (``generation`` and ``verify.enabled``), and otherwise skips it, saying so: without
    one, searched prompts stay predictions and the search's cost is mostly embedding them."""
    holdout: HoldoutConfig = field(default_factory=HoldoutConfig)
    ope: OPEConfig = field(default_factory=OPEConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    generation: LLMConfig | None = None
    """The LLM of the verify stage; None: no verify stage (every searched uplift stays predicted)."""
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    out: str | None = None
    """Run folder; None makes runs/<timestamp>."""
    seed: int = 0
    """Seed for every random step (splits, folds, proposers)."""
    device: str = "auto"
    """Where the causal model and the scoring run ('auto': CUDA when present)."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    """Where the finished run is also recorded (MLflow)."""

    def __post_init__(self) -> None:
        self.data = DataConfig.coerce(self.data)
        if self.proposer.kind != AUTO_PROPOSER and proposer_spec(self.proposer.kind).needs_server:
            raise ConfigError(f"proposer.kind '{self.proposer.kind}' is available in `cpo optimize` (it needs a running "
                              f"LLM server); use one of {', '.join(proposer_names(needs_server=False))} for `cpo run`")


@dataclass
class FitConfig:
    """`cpo fit`: data -> representations -> causal model, saved as a model bundle."""

    data: DataConfig = field(default_factory=DataConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    pca: PCAConfig = field(default_factory=PCAConfig)
    causal: CausalConfig = field(default_factory=CausalConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    out: str | None = None
    """Output folder (model bundle in OUT/model, diagnostics.json)."""
    seed: int = 0
    """Seed of the folds and nuisances."""
    device: str = "auto"
    """Where the causal model runs."""
    keep_residuals: bool = False
    """Also save out-of-fold residuals so refit_final works after loading."""

    def __post_init__(self) -> None:
        self.data = DataConfig.coerce(self.data)  # FitConfig(data=df): a table in memory


@dataclass
class EmbedJobConfig:
    """`cpo embed`: a triplet table -> its query and prompt features and the two PCA states."""

    data: DataConfig = field(default_factory=DataConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    pca: PCAConfig = field(default_factory=PCAConfig)
    out: str | None = None
    """Folder for the query/prompt features and the PCA states (required)."""

    def __post_init__(self) -> None:
        self.data = DataConfig.coerce(self.data)


@dataclass
class OptimizeConfig:
    """`cpo optimize`: a saved model bundle + a triplet table -> per-query choice and prompt search."""

    data: DataConfig = field(default_factory=DataConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    beam: BeamConfig = field(default_factory=BeamConfig)
    proposer: ProposerConfig = field(default_factory=ProposerConfig)
    ope: OPEConfig = field(default_factory=OPEConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    generation: LLMConfig | None = None
    """The LLM of the verify stage; None: no verify stage."""
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    model: str | None = None
    """A model bundle folder, or a `cpo run` / `cpo fit` output folder holding one."""
    out: str | None = None
    """Output folder."""
    mode: str = field(default="both", metadata={"choices": ("pool", "search", "both")})
    """'pool' (choose per query among the table's prompts), 'search' (beam search) or 'both'."""
    seed: int = 0
    """Seed of the proposers."""
    device: str = "auto"
    """Where the scoring runs."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        self.data = DataConfig.coerce(self.data)
        if self.mode not in ("pool", "search", "both"):
            raise ConfigError(f"mode must be 'pool', 'search' or 'both', got '{self.mode}'")


@dataclass
class AssignRayConfig:
    """Ray Data resources of `cpo assign --executor ray` (one actor = one loaded policy and encoder)."""

    address: str | None = None
    """Cluster to attach to (None: RAY_ADDRESS inside a Ray job, else a local Ray)."""
    num_actors: int = 1
    """Actors embedding and scoring batches in parallel (one per GPU on a GPU cluster)."""
    cpus_per_actor: float = 1.0
    """Logical CPUs each actor reserves."""
    gpus_per_actor: float | None = None
    """GPUs each actor reserves; None: 1 when the cluster has GPUs, else 0."""
    num_cpus: int | None = None
    """Logical CPUs of a local Ray started here (None: all)."""

    def __post_init__(self) -> None:
        if self.num_actors < 1 or self.cpus_per_actor <= 0 or (self.gpus_per_actor or 0) < 0:
            raise ConfigError("ray.num_actors must be >= 1, ray.cpus_per_actor > 0 and ray.gpus_per_actor >= 0")


@dataclass
class AssignConfig:
    """`cpo assign`: a fitted run or model bundle + unscored queries -> one recommended prompt per query."""

    model: str | None = None
    """A `cpo run` / `cpo fit` folder, or its model/ bundle (a local path or a file system URI)."""
    queries: str | None = None
    """Table of query_id, query_text: Parquet file or folder of shards, CSV/TSV, JSONL; local or a URI
    (s3://, gs://, ...). Other columns are ignored."""
    columns: dict[str, str] | str | None = None
    """The queries table's column names -> ours, e.g. {question: query_text} (flag: --columns
    question=query_text); without a query_id column, ids are derived from the texts (q- and a hash)."""
    out: str | None = None
    """Output: a .parquet, .csv or .jsonl file, or a folder (no suffix) of Parquet parts, which a rerun
    resumes. None: <queries>.assignment.parquet beside a local input."""
    batch_size: int = 4096
    """Queries embedded and scored per batch (memory stays bounded by the batch, not the input)."""
    executor: str = field(default="local", metadata={"choices": EXECUTORS})
    """'local' (stream in this process) or 'ray' (Ray Data map_batches over an actor pool)."""
    device: str = "auto"
    """Where the scoring runs ('auto': CUDA when present). The encoder's device is embed.device."""
    overwrite: bool = False
    """Replace an existing output (a folder output of a different model or input is otherwise refused)."""
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    ray: AssignRayConfig = field(default_factory=AssignRayConfig)

    def __post_init__(self) -> None:
        from cpo_engine.data.columns import parse_columns

        self.columns = parse_columns(self.columns, "columns")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.executor not in EXECUTORS:
            raise ConfigError(f"executor must be one of {EXECUTORS}, got '{self.executor}'")


@dataclass
class EvaluateConfig:
    """`cpo evaluate`: causal vs non-causal reward models on a full grid with injected confounding."""

    data: DataConfig = field(default_factory=DataConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    pca: PCAConfig = field(default_factory=PCAConfig)
    causal: CausalConfig = field(default_factory=CausalConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    ope: OPEConfig = field(default_factory=OPEConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    out: str | None = None
    """Folder for evaluation.json / .md / .png (or, with sweep.axes, budget.json / .md / budget_*.png)."""
    device: str = "auto"
    """Where the models run."""

    def __post_init__(self) -> None:
        self.data = DataConfig.coerce(self.data)


@dataclass
class OffPolicyConfig:
    """`cpo ope`: logged triplets + policies -> each policy's off-policy value with an interval."""

    data: DataConfig = field(default_factory=DataConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    pca: PCAConfig = field(default_factory=PCAConfig)
    causal: CausalConfig = field(default_factory=CausalConfig)
    ope: OPEConfig = field(default_factory=OPEConfig)
    policies: list[str] | None = None
    """Policies to value: assignment files (query_id + recommended_prompt_id, or query_id + prompt_id +
    probability) or logged prompt ids (static policies). Empty: every logged prompt as a static policy."""
    model: str | None = None
    """A model bundle (or `cpo run`/`cpo fit` folder) as the reward model; default: the causal model
    cross-fitted on the logs (the policies' queries must not have been used to fit a given bundle)."""
    queries: str = field(default="auto", metadata={"choices": ("auto", "test", "all")})
    """Which queries to value on: 'auto' (the 'test' rows of an assignment that has a split column,
    else all), 'test' or 'all'."""
    out: str | None = None
    """Output folder (ope.json, ope.md)."""
    seed: int = 0
    """Seed of the folds."""
    device: str = "auto"
    """Where the causal model runs."""

    def __post_init__(self) -> None:
        self.data = DataConfig.coerce(self.data)
        if self.queries not in ("auto", "test", "all"):
            raise ConfigError(f"queries must be 'auto', 'test' or 'all', got '{self.queries}'")


EDIT_INPUTS = ("auto", "triplets", "trajectory")


@dataclass
class EditsJobConfig:
    """`cpo edits`: a triplet table or an optimizer trajectory -> effects of edit families per task (and model),
    a heatmap and an edit prior for the edit-operator proposer."""

    data: str | None = None
    """Triplet table or optimizer trajectory (prompt, parent, task, model, score): a .parquet file or folder,
    .csv or .jsonl."""
    out: str | None = None
    """Output folder (edit_effects.csv/.md, surface_effects.csv, motif_effects.csv, heterogeneity.csv,
    edit_heatmap.png, edit_prior.json, summary.json)."""
    kind: str = field(default="auto", metadata={"choices": EDIT_INPUTS})
    """Input kind; 'auto': a triplet table when the triplet columns are present, else a trajectory."""
    filter: list[str] = field(default_factory=list)
    """Keep rows whose COL is one of the values, one COL=V1,V2 per entry (the flag is repeatable), e.g.
    task=svamp,gsm8k."""
    score_column: str | None = None
    """Column holding the score (default: score, or a trajectory's alias of it: reward, accuracy, ...)."""
    seed: int | None = None
    """Seed of the edit subsampling and the folds: sets pairs.seed and effects.random_state (unset: theirs)."""
    pairs: PairConfig = field(default_factory=PairConfig)
    """How edits are formed from prompt pairs (every ordered pair, or parent links)."""
    effects: EffectConfig = field(default_factory=EffectConfig)
    """How the effects are estimated (cross-fitted DML) and tested (Benjamini-Hochberg)."""
    prior: PriorConfig = field(default_factory=PriorConfig)
    """How the effects become the edit prior's weights."""

    def __post_init__(self) -> None:
        from dataclasses import replace

        if self.kind not in EDIT_INPUTS:
            raise ConfigError(f"kind must be one of {EDIT_INPUTS}, got '{self.kind}'")
        if self.seed is not None:
            self.pairs = replace(self.pairs, seed=self.seed)
            self.effects = replace(self.effects, random_state=self.seed)
        self.filters()  # a malformed filter is refused when the config is read

    def filters(self) -> dict[str, list[str]]:
        """``filter`` as {column: values}. An entry without '=' adds values to the column before it
        (``--set filter=task=a,b`` reaches here split at the commas)."""
        out: dict[str, list[str]] = {}
        col = None
        for spec in self.filter:
            name, sep, vals = spec.partition("=")
            if sep and name.strip() and vals.strip():
                col = name.strip()
            elif sep or col is None or not spec.strip():
                raise ConfigError(f"filter expects COL=V1,V2 (e.g. --filter task=svamp,gsm8k), got {spec!r}")
            else:
                vals = spec
            out.setdefault(col, []).extend(v.strip() for v in vals.split(",") if v.strip())
        return out


@dataclass
class GateConfig:
    """When a new nightly fit is not trusted (the previous model then stays live)."""

    min_ess_share: float = 0.05
    """Fail when the final stage's effective sample size is below this share of rows."""
    max_condition: float = 1e8
    """Fail when the final-stage Gram matrix is worse conditioned than this."""
    min_overlap: float = 0.0
    """Fail when any prompt-feature dimension keeps less than this share of its variance given X."""
    fail_on_warnings: bool = False
    """Also fail on any CausalDiagnosticWarning the fit raised."""


@dataclass
class DriftConfig:
    """What counts as drift between the live run and tonight's."""

    min_kendall_tau: float = 0.5
    """Flag when the prompts' static-effect ranking correlates less than this with the live one."""
    max_changed_share: float = 0.3
    """Flag when more than this share of queries get a different prompt."""
    max_uplift_change: float = 0.05
    """Flag when the predicted per-query uplift moves by more than this (score units)."""
    fail_on_drift: bool = False
    """A drifted model is not promoted (the live one stays) and `cpo nightly` exits 3."""


@dataclass
class PromoteConfig:
    """Promotion without an LLM (`cpo nightly` with no ``generation`` section): tonight's policy and static prompt
    against the live one, valued on fresh logs the night's model was not fitted on."""

    holdout_share: float = 0.3
    """Share of tonight's new queries (ids not logged on an earlier date) held out of the night's fit to value the
    policies on; 0: no held-out queries, and nothing goes live without an LLM."""
    min_queries: int = 20
    """Fewer held-out queries than this: nothing is promoted (the values would be too noisy to act on)."""
    level: float = 0.95
    """Confidence level of the promotion test: a challenger goes live when the lower end of this interval of its
    paired difference from the live one (Bonferroni-adjusted over the challengers) is > ``margin``."""
    margin: float = 0.0
    """The difference's lower bound must be above this (score units)."""

    def __post_init__(self) -> None:
        if not 0 <= self.holdout_share < 1:
            raise ConfigError(f"promote.holdout_share must be in [0, 1), got {self.holdout_share}")
        if not 0 < self.level < 1 or self.min_queries < 2:
            raise ConfigError("promote.level must be in (0, 1) and promote.min_queries >= 2")


@dataclass
class NightlyConfig:
    """`cpo nightly` / `jobs.nightly`: append, refit, re-select, compare, flag drift."""

    state: str = "runs/nightly"
    """State folder (kept across nights): a local path, or an object-store URI (s3://bucket/prefix, gs://...)
    worked on through a local mirror under a lock object."""
    new: str | None = None
    """Today's triplets: a triplet table, or a `cpo generate` run folder (its error-free rows)."""
    columns: dict[str, str] | str | None = None
    """Today's table's column names -> ours, e.g. {question: query_text} (flag: --columns question=query_text);
    ids absent are derived from the texts."""
    score_field: str | None = None
    """Chat-format JSONL (records with "messages"): the field holding the score or feedback (up/down -> 1/0)."""
    date: str | None = None
    """Label of tonight's run (default: today, UTC, YYYY-MM-DD)."""
    window_days: int | None = None
    """Fit on the last N dates only (None: every date)."""
    seed: int = 0
    """Seed of the folds."""
    device: str = "auto"
    """Where the causal model runs."""
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    pca: PCAConfig = field(default_factory=PCAConfig)
    causal: CausalConfig = field(default_factory=CausalConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    beam: BeamConfig = field(default_factory=BeamConfig)
    proposer: ProposerConfig = field(default_factory=lambda: ProposerConfig(kind=AUTO_PROPOSER))
    """The generative search from the logged prompts (a registered proposer; 'none': the logged pool only). 'auto'
    (the default) searches ('edit') only when an LLM is configured to verify what it finds: without one a searched
    prompt cannot be measured, so it never goes live, and embedding candidates is most of a night's time."""
    generation: LLMConfig | None = None
    """The LLM that verifies tonight's prompts before one goes live; None: nothing new goes live."""
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    promote: PromoteConfig = field(default_factory=PromoteConfig)
    """Promotion on held-out fresh logs when no LLM verifies (doubly robust, or measured on a full grid)."""
    ope: OPEConfig = field(default_factory=OPEConfig)
    """Off-policy estimation of the promotion values (estimator, propensities, overlap thresholds)."""
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """The per-query policy each night's bundle saves (model/policy.json) and the reliability checks it serves with."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    """Where each night is also recorded (MLflow; a promoted prompt becomes a registry version aliased 'live')."""

    def __post_init__(self) -> None:
        from cpo_engine.data.columns import parse_columns

        self.columns = parse_columns(self.columns, "columns")
        if self.window_days is not None and self.window_days < 1:
            raise ConfigError(f"window_days must be >= 1 or unset, got {self.window_days}")
        if self.date is not None and ("/" in self.date or self.date.startswith(".")):
            raise ConfigError(f"date must be a plain label like 2026-01-31, got '{self.date}'")


__all__ = ["RunConfig", "FitConfig", "EmbedJobConfig", "OptimizeConfig", "EvaluateConfig", "NightlyConfig",
           "PromoteConfig", "OffPolicyConfig", "EditsJobConfig", "AssignConfig", "AssignRayConfig", "PolicyConfig", "HoldoutConfig", "GateConfig", "DriftConfig", "LLMConfig",
           "VerifyConfig", "VerifyJobConfig", "LoopConfig", "TrackingConfig"]
