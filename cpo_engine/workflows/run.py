"""`cpo run`: load -> represent -> split -> fit -> choose per query (pool) -> search -> write.

Pool mode is the part recorded outcomes can check: the causal model chooses, for every held-out
query, one of the logged prompts; its value is the mean recorded score of those choices, compared
per query with the best static prompt (best mean on the training queries), with a paired interval.
The non-causal outcome model makes the same choice for comparison. Generative mode runs the beam
search from the logged prompts with the configured proposer; its numbers are model predictions (no
LLM ran the new prompts), reported with intervals and the trust region's verdict.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TYPE_CHECKING

import numpy as np
import pyarrow as pa

from cpo_engine.data.grid import cell_means, nan_mean, split_queries
from cpo_engine.exceptions import DataError
from cpo_engine.workflows.common import (Representer, check_cv, data_summary, load_data, open_run, preflight,
                                         name_prompts, print_summary, scores_and_weights, staged, write_features)
from cpo_engine.settings import HoldoutConfig, RunConfig
from cpo_engine.workflows.run_types import POLICY_LABELS, Logs, PoolResult
from cpo_engine.workflows.tracking import check_tracking, log_folder

if TYPE_CHECKING:
    from cpo_engine.search.beam import SearchResult
    from cpo_engine.causal.dml import CausalRewardModel
    from cpo_engine.embedding.config import EmbedConfig
    from cpo_engine.causal.head import LinearHead
    from cpo_engine.causal.baseline import OutcomeRewardModel
    from cpo_engine.embedding.representations import Representations

log = logging.getLogger(__name__)

#: What `cpo run` writes in its run folder (cleared when a later run reuses the folder).
RUN_OUTPUTS = ("features", "model", "search", "plots", "summary.json", "report.html", "report_sections.json")

@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, Any]
    representations: Representations
    table: pa.Table
    pool: PoolResult
    search: SearchResult | None
    evaluation: dict[str, Any]
    paths: dict[str, Path]


def training_logs(table: pa.Table, reps: Representations, train: np.ndarray, holdout: HoldoutConfig, seed: int) -> Logs:
    """The training queries' rows as logged (with their weights), or (``holdout.simulate_confounding``,
    full-grid data only) logs drawn from them with a known query-dependent logging policy, so the
    causal/non-causal comparison meets confounding."""
    y, w = scores_and_weights(table)
    if holdout.simulate_confounding is None:
        from cpo_engine.causal.ope import logged_propensity

        rows = np.flatnonzero(np.isin(reps.row_query, train))
        return Logs(reps.row_query[rows], reps.row_prompt[rows], y[rows], None if w is None else w[rows],
                    logged_propensity(table, rows))
    from cpo_engine.causal.evaluation import EvaluationConfig, build_grid, draw_logs, logging_policy

    grid = build_grid(table, reps)
    ecfg = EvaluationConfig(confounding=holdout.simulate_confounding, strength=holdout.confounding_strength)
    logs = draw_logs(grid, logging_policy(grid, ecfg), train, holdout.logged_per_query, np.random.default_rng(seed))
    return Logs(logs["q"], logs["p"], logs["y"])


def check_training_queries(table: pa.Table, cfg: RunConfig, source: str) -> None:
    """The query split the fit will use (:func:`split_queries` on the queries' texts, as after the
    embedding), checked against ``causal.cv`` from the table alone: a ConfigError before any work. Too few
    training queries for a per-query policy (the policy's first check, ``policy.min_queries``) is said here
    too, before the embedding, not only in the report."""
    from cpo_engine.embedding.representations import unique_texts

    _, texts, _ = unique_texts(table, "query_id", "query_text")
    train, test = split_queries(texts, cfg.holdout.test_fraction, cfg.seed)
    check_cv(cfg.causal.cv, len(train), source,
             f" ({len(train) + len(test)} queries, {len(test)} held out by holdout.test_fraction="
             f"{cfg.holdout.test_fraction})")
    if len(train) < cfg.policy.min_queries:
        log.info("data too small for a per-query policy: %d training queries < policy.min_queries = %d, so every "
                 "query will get the best static prompt (log more queries for a per-query choice)", len(train),
                 cfg.policy.min_queries)


def resolve_proposer(cfg: Any) -> Any:
    """``proposer.kind = 'auto'`` (the default of `cpo run` and `cpo nightly`) made concrete: 'edit' when an LLM is
    configured to verify what the search finds, else 'none', said in one line (searched prompts nothing can
    measure stay predictions, and embedding them is most of a run's time). A kind the user named is kept. ``cfg``:
    a RunConfig or NightlyConfig (a config with ``proposer``, ``generation`` and ``verify``)."""
    from dataclasses import replace

    from cpo_engine.search.config import AUTO_PROPOSER

    if cfg.proposer.kind != AUTO_PROPOSER:
        return cfg
    can_verify = cfg.generation is not None and cfg.verify.enabled
    if not can_verify:
        log.info("search: skipped (no LLM is configured to verify searched prompts, so they would stay predictions); "
                 "choosing among the logged prompts. --proposer edit searches anyway")
    resolved = copy.copy(cfg)  # not replace(): RunConfig's __post_init__ would coerce the data again
    resolved.proposer = replace(cfg.proposer, kind="edit" if can_verify else "none")
    return resolved


def fit_models(reps: Representations, logs: Logs, cfg: RunConfig) -> tuple[Any, Any]:
    """Fit the causal model and the non-causal outcome model on training logs (query, prompt, score)."""
    from cpo_engine.causal import OutcomeRewardModel

    X, T, g = reps.X[logs.q], reps.T[logs.p], logs.q
    causal = cfg.causal.make_model(device=cfg.device, random_state=cfg.seed)
    causal.fit(logs.y, T, X=X, groups=g, sample_weight=logs.w)
    name_prompts(causal, reps)
    outcome = OutcomeRewardModel(random_state=cfg.seed).fit(logs.y, T, X=X, groups=g)
    return causal, outcome


def choose_pool(reps: Representations, table: pa.Table, logs: Logs, test: np.ndarray, causal: CausalRewardModel,
                outcome: OutcomeRewardModel,
                cfg: RunConfig) -> PoolResult:
    """Per-query choice among the logged prompts, checked on held-out queries against recorded outcomes.

    The choice is the run's :class:`~cpo_engine.policy.policy.Policy` (``PoolResult.run_policy``) applied
    once to every query (:func:`~cpo_engine.search.select.select_per_query`; the static prompt everywhere when
    the policy falls back); the held-out evaluation scores its held-out rows, the assignment is its table.
    The best static prompt (also the incumbent every query keeps unless its gain is confidently positive)
    is chosen from the training logs by :func:`~cpo_engine.causal.static_choice.choose_static`: measured
    means on a full grid, doubly robust estimates on observational logs (the logs' propensities when
    they have them).
    """
    from cpo_engine.causal.static_choice import choose_static

    from cpo_engine.search import by_tier, select_per_query
    from cpo_engine.workflows.ope import run_policy_values
    from cpo_engine.policy.policy import Policy, learn_state

    n_q, n_p = len(reps.query_ids), len(reps.prompt_ids)
    y, _ = scores_and_weights(table)
    Y, _ = cell_means(reps.row_query, reps.row_prompt, y, n_q, n_p)
    train = np.unique(logs.q)
    train_means = nan_mean(cell_means(logs.q, logs.p, logs.y, n_q, n_p)[0][train], axis=0)  # NaN: not logged
    choice = choose_static(logs.q, logs.p, logs.y, reps.X, [str(p) for p in reps.prompt_ids], propensity=logs.propensity,
                           weight=logs.w, query_texts=list(reps.query_texts), seed=cfg.seed)
    log.info(choice.sentence())
    static = choice.index
    # the run's policy (logged prompts; the reliability checks decide its fallback) chooses once, for every query:
    # the held-out evaluation below and search/assignment.parquet are the same choice
    state = learn_state(causal, reps.X[train], reps.prompt_ids, reps.prompt_texts, reps.T, train_means,
                        cfg.selection, static_choice=choice, X_queries=reps.X)
    run_policy = Policy(causal, state, cfg.policy, device="cpu")
    run_policy.warn()
    policy = run_policy.choose(reps.X)
    head, incumbent = run_policy.head, state.incumbent
    non_causal = outcome.effect_grid(reps.X[test], reps.T)
    test_choices = {"causal_lcb": policy.choice[test], "causal_point": policy.point_choice()[test],
                    "non_causal": select_per_query(non_causal)[0]}
    Yt = Y[test]
    evals = {name: _evaluate(c, Yt, static) for name, c in test_choices.items()}
    agreement = static_agreement(head, reps.X[train], reps.T, train_means, [str(p) for p in reps.prompt_ids], choice)
    return PoolResult(policy=policy, head=head, static_index=static, incumbent_index=incumbent,
                      train_means=train_means, Y_test=Yt, test_choices=test_choices, evaluations=evals,
                      tiers=by_tier(test_choices["causal_lcb"], Yt, static, cfg.holdout.n_tiers)
                      if np.isfinite(Yt).all() else [],  # sparse outcomes would tier a selected subset
                      non_causal_mean_effect=non_causal.mean(axis=0),
                      static_rank_agreement=agreement, static_choice=choice,
                      policy_values=run_policy_values(reps, table, logs, test, causal, test_choices, static, cfg),
                      run_policy=run_policy)


def _evaluate(choice: np.ndarray, Y: np.ndarray, static: int) -> dict[str, Any]:
    """:func:`evaluate_choice`, or ``{"skipped": why}`` when the held-out outcomes cannot score it
    (e.g. observational logs with one prompt per query: the chosen prompt was rarely run)."""
    from cpo_engine.search import evaluate_choice

    if not np.isfinite(Y).all():  # a subset of queries would be a selected one: the off-policy estimate covers all
        return {"skipped": "held-out outcomes do not cover every query's prompts (observational logs); see the "
                           "off-policy estimate in policy values"}
    try:
        return evaluate_choice(choice, Y, static)
    except DataError as exc:
        log.warning("pool-mode evaluation skipped: %s", exc)
        return {"skipped": str(exc)}


def static_agreement(head: LinearHead, X: np.ndarray, T: np.ndarray, observed: np.ndarray, prompt_ids: list[str],
                     choice: Any = None) -> float:
    """Spearman correlation of the model's average effect per logged prompt with the prompts' values
    (``choice``'s estimates when given: measured on a full grid, doubly robust on logs; else ``observed``).

    When the model's best prompt is not the best valued one, a warning names both: on unconfounded
    logs that means the head cannot represent the logged prompts (typically fewer prompt PCA
    components than logged prompts - 1, so a linear function of T cannot tell them apart).
    """
    from scipy.stats import spearmanr

    eff, _ = head.static_effect(X, T)
    if choice is not None:
        observed = np.full(len(T), np.nan)
        for v in choice.values:
            observed[v.index] = v.value
    ok = np.isfinite(observed)
    rho = float(spearmanr(eff[ok], observed[ok]).statistic) if ok.sum() > 2 else float("nan")
    model_best = int(np.argmax(np.where(ok, eff, -np.inf)))
    seen_best = int(np.nanargmax(observed)) if choice is None else int(choice.index)
    tied = choice is not None and model_best in choice.contenders  # the logs cannot separate the two
    if model_best != seen_best and not tied:
        log.warning("the causal model ranks prompt '%s' first (valued %.3f) but the best static prompt is '%s' "
                    "(%.3f); Spearman of the model's ranking vs the prompts' values %.2f. The model's average "
                    "effects extrapolate where a prompt was rarely logged, and a linear head cannot tell the prompts "
                    "apart with %d logged prompts and %d prompt PCA components (raise pca.prompt_components, up to "
                    "%d); the static choice does not use them",
                    prompt_ids[model_best], observed[model_best], prompt_ids[seen_best], observed[seen_best], rho,
                    len(T), T.shape[1], len(T) - 1)
    return rho


def majority_task(table: pa.Table) -> str | None:
    """The most common value of the table's task column (None without one)."""
    if "task" not in table.column_names:
        return None
    vc = table.column("task").value_counts().to_pylist()
    return max(vc, key=lambda r: r["counts"])["values"] if vc else None


def generative_search(table: pa.Table, reps: Representations, head: LinearHead, cfg: RunConfig,
                      embed: EmbedConfig, train: np.ndarray | None = None) -> Any:
    """Beam search from the logged prompts with the configured proposer, scored for every query. ``train``:
    the training queries (indices into ``reps``), whose rows alone a proposer that reads the data (worked
    examples) sees; None gives it none (such a proposer then refuses)."""
    from cpo_engine.search import BeamSearch, Candidate, CandidateScorer, make_proposer
    from cpo_engine.search.proposers import proposer_spec

    reads_data = train is not None and proposer_spec(cfg.proposer.kind).needs_data  # as `cpo optimize` gates it
    data = table.take(np.flatnonzero(np.isin(reps.row_query, train))) if reads_data else None
    verify_file = getattr(getattr(cfg, "verify", None), "queries", None)
    if data is not None and verify_file:  # queries verified from a file may also be training queries
        from cpo_engine.workflows.common import without_queries
        from cpo_engine.workflows.verify import read_queries

        data = without_queries(data, read_queries(verify_file))
    proposer = make_proposer(cfg.proposer, task=cfg.proposer.task or majority_task(table), seed=cfg.seed, data=data)
    scorer = CandidateScorer.from_selection(head, reps.X, embed, cfg.selection, reps.T, device=cfg.device)
    seeds = [Candidate.seed(t, id=str(pid)) for pid, t in zip(reps.prompt_ids, reps.prompt_texts)]
    return BeamSearch(proposer, scorer, cfg.beam, query_texts=reps.query_texts).run(seeds)


def run(cfg: RunConfig) -> RunResult:
    """`cpo run`: the whole pipeline in a run folder with a manifest (config, versions, data hash, timings)."""
    from cpo_engine.policy.bundle import save_bundle
    from cpo_engine.workflows.run_outputs import print_findings, write_run_outputs

    from cpo_engine.data.storage import is_remote

    cfg = resolve_proposer(cfg)  # 'auto': search only when an LLM can verify; before the folder and the data
    if is_remote(cfg.out):
        return staged(cfg, run)
    run_dir = Path(cfg.out or f"runs/{time.strftime('%Y%m%d-%H%M%S')}")
    preflight(cfg)  # optional packages of the nuisances, the edit prior: before the folder or the data
    check_tracking(cfg.tracking)  # --mlflow without the mlflow extra: before any work
    with open_run(run_dir, cfg, "run", RUN_OUTPUTS) as manifest:
        with manifest.stage("data"):
            table, info = load_data(cfg.data)
            manifest.data["data"] = info
            check_training_queries(table, cfg, info["path"])  # cv vs queries: before the embedding and any output
        with manifest.stage("embed_pca"):
            rep = Representer(cfg.embed)
            reps = rep.represent(table, cfg.pca)
            for key, path in write_features(reps, run_dir / "features").items():
                manifest.output(key, path)
        with manifest.stage("summary"):
            summary = data_summary(table, reps)
            from cpo_engine.causal.headroom import headroom_table
            from cpo_engine.utils import atomic_write_json

            summary["headroom"] = headroom_table(table)  # before optimizing: do the prompts differ beyond noise?
            atomic_write_json(run_dir / "summary.json", summary)
            manifest.output("summary", run_dir / "summary.json")
            print_summary(summary)
            print(summary["headroom"]["line"])
        timings: dict[str, float] = {}
        with manifest.stage("fit"):
            t0 = time.perf_counter()
            train, test = split_queries(reps.query_texts, cfg.holdout.test_fraction, cfg.seed)
            logs = training_logs(table, reps, train, cfg.holdout, cfg.seed)
            causal, outcome = fit_models(reps, logs, cfg)
            manifest.output("model", save_bundle(run_dir / "model", causal, reps, cfg.embed, info))
            timings["fit"] = time.perf_counter() - t0
        with manifest.stage("pool"):
            t0 = time.perf_counter()
            pool = choose_pool(reps, table, logs, test, causal, outcome, cfg)
            timings["pool"] = time.perf_counter() - t0
        result = None
        if cfg.proposer.kind != "none":
            with manifest.stage("search"):
                t0 = time.perf_counter()
                result = generative_search(table, reps, pool.head, cfg, rep.prompt_embedder(reps), train=train)
                timings["search"] = time.perf_counter() - t0
                log_search_cost(timings["search"], cfg.generation is not None and cfg.verify.enabled)
        with manifest.stage("report"):
            evaluation, paths = write_run_outputs(run_dir, reps, cfg, causal, pool, result, train, test, timings)
            for key, path in paths.items():
                manifest.output(f"search.{key}", path)
            manifest.data["search"] = {k: evaluation[k] for k in
                                       ("static_prompt_id", "incumbent_prompt_id", "static_rank_agreement",
                                        "n_train_queries", "n_test_queries")}
            manifest.data["search"]["causal_diagnostics"] = evaluation["diagnostics"]
        print_findings(evaluation, result, paths)
        if cfg.generation is not None and cfg.verify.enabled:  # measure the recommendations with the LLM
            from cpo_engine.workflows.verify import print_verification, verify_run

            with manifest.stage("verify"):
                verified = verify_run(run_dir, cfg.verify, cfg.generation, table, selection=cfg.selection,
                                      embed=cfg.embed, representer=rep)
                manifest.output("verification", verified.out / "verification.json")
                evaluation["verification"] = verified.report
            print_verification(verified.report)
    log_folder(cfg.tracking, run_dir, "run")  # the finished folder (manifest ok) to MLflow, with --mlflow
    return RunResult(run_dir, summary, reps, table, pool, result, evaluation, paths)


def log_search_cost(seconds: float, can_verify: bool) -> None:
    """What the search cost: its candidate texts embedded, at what rate, and whether anything will measure
    what it found (without an LLM its prompts stay predicted only)."""
    from cpo_engine.utils import LEDGER

    row = LEDGER.snapshot()["stages"].get("search") or {}
    n, embed_s = int(row.get("embedded_texts", 0)), float(row.get("embedding_seconds", 0.0))
    rate = f"{n / embed_s:.1f} texts/s" if embed_s > 0 else "cached"
    log.info("search: %d candidate texts embedded (%s; %.0f s of the search's %.0f s)%s", n, rate, embed_s, seconds,
             "" if can_verify else "; no LLM is configured to verify them, so searched prompts stay predicted only "
                                   "(--proposer none skips the search)")


__all__ = ["run", "resolve_proposer", "RunResult", "PoolResult", "Logs", "training_logs", "fit_models", "choose_pool",
           "generative_search", "static_agreement", "majority_task", "POLICY_LABELS"]
