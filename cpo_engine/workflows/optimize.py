"""`cpo optimize`: a saved model bundle + a triplet table -> per-query choice among the table's prompts
and a beam search from them. Scoring needs no LLM call; only the LLM proposer calls one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from cpo_engine.exceptions import ConfigError
from cpo_engine.utils import atomic_write_json, atomic_write_parquet
from cpo_engine.workflows.common import load_data, usable_folder
from cpo_engine.workflows.config import OptimizeConfig


@dataclass
class OptimizeResult:
    out: Path
    assignment: pa.Table
    best: dict[str, Any]
    search: Any


def optimize(cfg: OptimizeConfig) -> OptimizeResult:
    """Embed the table with the bundle's encoder and PCAs, choose per query, search, write outputs."""
    from cpo_engine.search import (BeamSearch, Candidate, CandidateScorer, make_proposer, pool_assign,
                                   referenced_head)
    from cpo_engine.workflows.bundle import ModelBundle
    from cpo_engine.workflows.run import majority_task
    from cpo_engine.workflows.run_outputs import candidates_table

    if not cfg.model or not cfg.out:
        raise ConfigError("optimize needs --model (a model bundle or a `cpo run`/`cpo fit` folder) and --out")
    usable_folder(cfg.out)  # a bad --out fails now, not after the search
    bundle = ModelBundle.load(cfg.model)
    table, _ = load_data(cfg.data)
    rep = bundle.representer(cfg.embed)  # refuses an encoder that is not the model's
    reps = rep.represent(table, query_pca=bundle.query_pca, prompt_pca=bundle.prompt_pca)
    head, _ = referenced_head(bundle.model.linear_head(), reps.X, reps.T, cfg.selection.reference)
    scorer = CandidateScorer.from_selection(head, reps.X, rep.prompt_embedder(reps), cfg.selection, reps.T,
                                            device=cfg.device)
    pool = pool_assign(scorer, [str(p) for p in reps.prompt_ids], reps.prompt_texts, T_pool=reps.T)
    static = pool.static_choice()
    assignment = pool.assignment_table(reps.query_ids, reps.prompt_texts)
    best: dict[str, Any] = {"pool_static": {"prompt_id": pool.prompt_ids[static], "text": reps.prompt_texts[static]}}
    out, result = Path(cfg.out), None
    if cfg.mode in ("search", "both"):
        proposer = make_proposer(cfg.proposer, task=cfg.proposer.task or majority_task(table), seed=cfg.seed)
        if proposer is None:
            raise ConfigError("mode 'search' needs a proposer: set proposer.kind to 'edit' or 'llm'")
        seeds = [Candidate.seed(t, id=str(p)) for p, t in zip(reps.prompt_ids, reps.prompt_texts)]
        result = BeamSearch(proposer, scorer, cfg.beam, query_texts=reps.query_texts).run(seeds)
        cands = candidates_table(result, reps.X, reps.T[static], head)
        top = result.topk_index[:, 0]
        assignment = (assignment.append_column("search_candidate_id",
                                               pa.array([result.candidates[i].id if i >= 0 else None for i in top]))
                      .append_column("search_prompt_text",
                                     pa.array([result.candidates[i].text if i >= 0 else None for i in top]))
                      .append_column("search_effect", pa.array(result.topk_effect[:, 0]))
                      .append_column("search_se", pa.array(result.topk_se[:, 0])))
        atomic_write_parquet(cands, out / "candidates.parquet")
        atomic_write_json(out / "search_trace.json", result.trace)
        best["search_static"] = cands.slice(0, 1).to_pylist()[0]
    if cfg.mode == "search":
        assignment = assignment.select(["query_id"] + [c for c in assignment.column_names if c.startswith("search_")])
    atomic_write_parquet(assignment, out / "assignment.parquet")
    atomic_write_json(out / "best_static_prompt.json", best)
    return OptimizeResult(out, assignment, best, result)


__all__ = ["optimize", "OptimizeResult"]
