"""`cpo optimize`: a saved model bundle + a triplet table -> a beam search from the table's prompts and
one recommended prompt per query (among the table's prompts and, in search modes, the searched
candidates, labelled unverified). Scoring needs no LLM call; only the LLM proposer calls one."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TYPE_CHECKING

import pyarrow as pa

from cpo_engine.exceptions import ConfigError, DataError
from cpo_engine.search.proposers import preflight_proposer, proposer_names, proposer_spec
from cpo_engine.utils import atomic_write_json, atomic_write_parquet
from cpo_engine.workflows.common import load_data, now, refuse_other_kind, usable_folder, write_manifest
from cpo_engine.workflows.tracking import check_tracking, log_folder
from cpo_engine.settings import OptimizeConfig

if TYPE_CHECKING:
    from cpo_engine.search.beam import SearchResult
    from cpo_engine.workflows.verify import VerifyResult

log = logging.getLogger(__name__)


@dataclass
class OptimizeResult:
    out: Path
    assignment: pa.Table
    best: dict[str, Any]
    search: SearchResult | None
    verification: VerifyResult | None = None


def optimize(cfg: OptimizeConfig) -> OptimizeResult:
    """Embed the table with the bundle's encoder and PCAs, search, and write one recommended prompt per
    query (the table's prompts, plus the searched candidates labelled unverified in search modes)."""
    from cpo_engine.search import BeamSearch, Candidate, CandidateScorer, make_proposer
    from cpo_engine.policy.bundle import ModelBundle
    from cpo_engine.workflows.common import scores_and_weights
    from cpo_engine.workflows.ope import optimize_policy_values
    from cpo_engine.policy.policy import Policy, searched_from_result, table_state
    from cpo_engine.workflows.run import majority_task
    from cpo_engine.workflows.run_outputs import candidates_table

    if not cfg.model or not cfg.out:
        raise ConfigError("optimize needs --model (a model bundle or a `cpo run`/`cpo fit` folder) and --out")
    from cpo_engine.data.storage import is_remote

    if is_remote(cfg.out):  # written locally, uploaded when it ends ok (manifest last)
        from cpo_engine.workflows.common import staged

        return staged(cfg, optimize)
    usable_folder(cfg.out)  # a bad --out fails now, not after the search
    refuse_other_kind(cfg.out, "optimize")
    check_tracking(cfg.tracking)  # --mlflow without the mlflow extra: before any work
    if cfg.mode in ("search", "both"):
        preflight_proposer(cfg.proposer)  # its options and files, before the bundle and the embedding
    started = now()
    bundle = ModelBundle.load(cfg.model)
    table, data_info = load_data(cfg.data)
    rep = bundle.representer(cfg.embed)  # refuses an encoder that is not the model's
    reps = rep.represent(table, query_pca=bundle.query_pca, prompt_pca=bundle.prompt_pca)
    state = table_state(bundle.model, reps, scores_and_weights(table)[0], cfg.selection, table, cfg.seed)
    static = state.incumbent
    best: dict[str, Any] = {"pool_static": {"prompt_id": state.static_id, "text": reps.prompt_texts[static],
                                            "evidence": (state.evidence.get("static_choice") or {}).get("sentence")},
                            "incumbent": {"prompt_id": str(reps.prompt_ids[state.incumbent]),
                                          "text": reps.prompt_texts[state.incumbent]}}
    out, result, searched = Path(cfg.out), None, None
    if cfg.mode in ("search", "both"):
        data = search_rows(table, cfg) if proposer_spec(cfg.proposer.kind).needs_data else None
        proposer = make_proposer(cfg.proposer, task=cfg.proposer.task or majority_task(table), seed=cfg.seed, data=data)
        if proposer is None:
            raise ConfigError(f"mode 'search' needs a generative proposer: set proposer.kind to one of "
                              f"{', '.join(proposer_names(generative=True))}")
        policy = Policy(bundle.model, state, device=cfg.device)
        scorer = CandidateScorer.from_selection(policy.head, reps.X, rep.prompt_embedder(reps), cfg.selection, reps.T,
                                                device=cfg.device)
        seeds = [Candidate.seed(t, id=str(p)) for p, t in zip(reps.prompt_ids, reps.prompt_texts)]
        result = BeamSearch(proposer, scorer, cfg.beam, query_texts=reps.query_texts).run(seeds)
        sc = state.evidence.get("static_choice") or {}
        bounds = (None if "score_range" not in sc else
                  (sc["score_range"][0] - sc["value"], sc["score_range"][1] - sc["value"]))
        cands = candidates_table(result, reps.X, reps.T[static], policy.head, bounds)
        atomic_write_parquet(cands, out / "candidates.parquet")
        atomic_write_json(out / "search_trace.json", result.trace)
        best["search_static"] = cands.slice(0, 1).to_pylist()[0]
        searched = searched_from_result(result, reps.prompt_texts, cfg.policy.max_searched)
    candidates = "searched" if searched is not None else "logged"
    policy = Policy(bundle.model, state, replace(cfg.policy, candidates=candidates), searched=searched,
                    device=cfg.device, source=str(bundle.path))
    policy.warn()
    assignment = policy.assign_features(reps.X, reps.query_ids)
    try:
        best["policy_values"] = optimize_policy_values(reps, table, bundle, state, assignment, cfg, data_info).to_dict()
    except DataError as exc:  # too few queries to cross-fit the off-policy nuisances: the assignment still stands
        log.warning("policy values not estimated on this table: %s", exc)
        best["policy_values"] = {"skipped": str(exc)}
    atomic_write_parquet(assignment, out / "assignment.parquet")
    atomic_write_json(out / "best_static_prompt.json", best)
    atomic_write_json(out / "inputs.json", {"model": str(cfg.model), "data": str(data_info["path"]),
                                            "tasks": cfg.data.tasks})
    written = ["assignment.parquet", "best_static_prompt.json", "inputs.json"]
    written += ["candidates.parquet", "search_trace.json"] if result is not None else []
    write_manifest(out, "optimize", cfg, {Path(n).stem: out / n for n in written}, started_at=started, data=data_info)
    verification = None
    if cfg.generation is not None and cfg.verify.enabled:  # measure the recommendations with the LLM
        from cpo_engine.workflows.verify import print_verification, verify_optimize

        verification = verify_optimize(out, cfg, table, representer=rep)
        print_verification(verification.report)
    log_folder(cfg.tracking, out, "optimize")  # the finished folder to MLflow, with --mlflow
    return OptimizeResult(out, assignment, best, result, verification)


def search_rows(table: pa.Table, cfg: OptimizeConfig) -> pa.Table:
    """The rows a proposer that reads the data (worked examples) may draw from: the table less the queries the
    verification will measure (``verify.queries``, or the ones it samples from the table), so no demonstration
    in a searched prompt holds the answer to a query it is verified on."""
    if cfg.generation is None or not cfg.verify.enabled:
        return table
    from cpo_engine.workflows.common import without_queries
    from cpo_engine.workflows.verify import read_queries, sample_queries

    return without_queries(table, read_queries(cfg.verify.queries) if cfg.verify.queries else
                           sample_queries(table, cfg.verify, source="the optimized table"))


__all__ = ["optimize", "OptimizeResult", "search_rows"]
