"""The search half of `cpo run`: query split -> fit -> pool mode on held-out queries -> generative
search -> outputs and report.

Pool mode is the part recorded outcomes can check: the causal model chooses, for every held-out
query, one of the logged prompts; its value is the mean recorded score of those choices, compared
per query with the best static prompt (best mean on the training queries), with a paired interval.
The non-causal outcome model makes the same choice for comparison. Generative mode runs the beam
search from the logged prompts with the edit proposer; its numbers are model predictions (no LLM
ran the new prompts), reported with intervals and the trust region's verdict.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from statistics import NormalDist
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa

import kernels
from cpo_engine.causal.head import LinearHead

from cpo_engine.exceptions import DataError
from cpo_engine.report import Interval
from cpo_engine.search.beam import BeamSearch, SearchConfig, SearchResult
from cpo_engine.search.candidates import Candidate
from cpo_engine.search.config import SearchStageConfig
from cpo_engine.search.pool import by_tier, evaluate_choice, paired_interval
from cpo_engine.search.proposers import EditPrior, EditProposer
from cpo_engine.search.scoring import CandidateScorer
from cpo_engine.search.trust import TrustRegion
from cpo_engine.utils import atomic_write_json, atomic_write_parquet

log = logging.getLogger(__name__)
_Z95 = NormalDist().inv_cdf(0.975)


def split_queries(query_texts: Sequence[str], test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) query indices; queries with the same text never straddle the split."""
    _, key = np.unique(np.asarray(query_texts, dtype=object).astype(str), return_inverse=True)
    n_keys = int(key.max()) + 1
    test_keys = np.random.default_rng(seed).permutation(n_keys)[: max(1, int(round(test_fraction * n_keys)))]
    is_test = np.isin(key, test_keys)
    if is_test.all() or not is_test.any():
        raise DataError(f"cannot split {len(query_texts)} queries into train and test",
                        fix="use more queries or change search.test_fraction")
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def cell_means(row_q: np.ndarray, row_p: np.ndarray, y: np.ndarray, n_q: int, n_p: int) -> np.ndarray:
    """(n_q, n_p) mean score per (query, prompt) cell; NaN where no row was logged."""
    cell = row_q * n_p + row_p
    count = np.bincount(cell, minlength=n_q * n_p)
    total = np.bincount(cell, weights=y, minlength=n_q * n_p)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan).reshape(n_q, n_p)


def training_logs(table: pa.Table, reps: Any, y: np.ndarray, train: np.ndarray, cfg: SearchStageConfig,
                  seed: int) -> dict[str, np.ndarray]:
    """The rows models are fitted on: the training queries' rows as logged, or (``cfg.simulate_confounding``,
    full-grid data only) logs drawn from them with a known query-dependent logging policy
    (:mod:`cpo_engine.causal.evaluation`), so the causal/non-causal comparison meets confounding."""
    if cfg.simulate_confounding is None:
        rows = np.flatnonzero(np.isin(reps.row_query, train))
        return {"q": reps.row_query[rows], "p": reps.row_prompt[rows], "y": y[rows]}
    from cpo_engine.causal.evaluation import EvaluationConfig, build_grid, draw_logs, logging_policy

    grid = build_grid(table, reps)
    ecfg = EvaluationConfig(confounding=cfg.simulate_confounding, strength=cfg.confounding_strength)
    ecfg.validate()
    logs = draw_logs(grid, logging_policy(grid, ecfg), train, cfg.logged_per_query, np.random.default_rng(seed))
    return {"q": logs["q"], "p": logs["p"], "y": logs["y"]}


def fit_models(reps: Any, logs: dict[str, np.ndarray], cfg: SearchStageConfig, seed: int) -> tuple[Any, Any]:
    """Fit the causal model and the non-causal outcome model on training logs (query, prompt, score)."""
    from cpo_engine.causal import CausalRewardModel, OutcomeRewardModel

    X, T, g = reps.X[logs["q"]], reps.T[logs["p"]], logs["q"]
    causal = CausalRewardModel(model_y=cfg.model_y, model_t=cfg.model_t, featurizer=cfg.featurizer, cv=cfg.cv,
                               final_alpha=cfg.final_alpha, device=cfg.device, random_state=seed).fit(logs["y"], T, X=X, groups=g)
    outcome = OutcomeRewardModel(random_state=seed).fit(logs["y"], T, X=X, groups=g)
    return causal, outcome


def prompt_embedder(embed_cfg: Any, reps: Any) -> Callable[[Sequence[str]], np.ndarray]:
    """texts -> T: the run's encoder through its embedding cache, then the fitted prompt PCA.

    The encoder is built on first use, so pool-only runs never load it.
    """
    state: dict[str, Any] = {}

    def embed(texts: Sequence[str]) -> np.ndarray:
        from cpo_engine.embedding import EmbeddingCache, make_encoder

        if "encoder" not in state:
            state["encoder"] = make_encoder(embed_cfg.encoder, device=embed_cfg.device,
                                            batch_size=embed_cfg.batch_size, num_threads=embed_cfg.num_threads)
            state["cache"] = EmbeddingCache(embed_cfg.cache_dir) if embed_cfg.cache_dir else None
        prefix = reps.provenance.get("prompt_prefix", "") or ""
        enc, cache = state["encoder"], state["cache"]
        raw = cache.embed(enc, list(texts), prefix=prefix) if cache else enc.encode(list(texts), prefix=prefix)
        return reps.prompt_pca.transform(raw)

    return embed


def _interval_of(values: np.ndarray) -> Interval:
    r = paired_interval(values, np.zeros_like(values))
    return Interval(r["diff"], r["ci_low"], r["ci_high"])


def pool_stage(reps: Any, y: np.ndarray, logs: dict[str, np.ndarray], test: np.ndarray, causal: Any,
               outcome: Any, cfg: SearchStageConfig, trust: TrustRegion) -> dict[str, Any]:
    """Per-query choice among the logged prompts on held-out queries, against recorded outcomes.

    The best static prompt is the one with the best mean score in the training logs (what a user
    without a model would pick).
    """
    n_q, n_p = len(reps.query_ids), len(reps.prompt_ids)
    Y = cell_means(reps.row_query, reps.row_prompt, y, n_q, n_p)
    train = np.unique(logs["q"])
    with np.errstate(all="ignore"):
        train_means = np.nanmean(cell_means(logs["q"], logs["p"], logs["y"], n_q, n_p)[train], axis=0)
    static = int(np.nanargmax(train_means))
    head, incumbent = referenced_head(causal.linear_head(), reps.X[train], reps.T, cfg.reference)
    scorer = CandidateScorer(head, reps.X, embed=lambda t: None, trust_region=trust, z=cfg.z,
                             length_penalty=cfg.length_penalty, device="cpu")
    bias, _ = scorer.bias(reps.prompt_texts, reps.T)
    eff, se = scorer.per_query(reps.T)
    nc_grid = outcome.effect_grid(reps.X[test], reps.T)
    choices = {"causal_lcb": np.argmax(eff - cfg.z * se + bias, axis=1),
               "causal_point": np.argmax(eff + bias, axis=1)}
    test_choices = {k: v[test] for k, v in choices.items()} | {"non_causal": np.argmax(nc_grid, axis=1)}
    Yt = Y[test]
    evals = {name: _evaluate(c, Yt, static) for name, c in test_choices.items()}
    agreement = static_agreement(head, reps.X[train], reps.T, train_means, [str(p) for p in reps.prompt_ids])
    return {"Y_test": Yt, "static_index": static, "incumbent_index": incumbent, "head": head, "choices": choices, "test_choices": test_choices,
            "evaluations": evals, "effect": eff, "se": se, "train_means": train_means,
            "tiers": by_tier(test_choices["causal_lcb"], Yt, static, cfg.n_tiers),
            "non_causal_mean_effect": nc_grid.mean(axis=0), "static_rank_agreement": agreement}


def _evaluate(choice: np.ndarray, Y: np.ndarray, static: int) -> dict[str, Any]:
    """:func:`evaluate_choice`, or ``{"skipped": why}`` when the held-out outcomes cannot score it
    (e.g. observational logs with one prompt per query: the chosen prompt was rarely run)."""
    try:
        return evaluate_choice(choice, Y, static)
    except DataError as exc:
        log.warning("pool-mode evaluation skipped: %s", exc)
        return {"skipped": str(exc)}


def static_agreement(head: LinearHead, X: np.ndarray, T: np.ndarray, observed: np.ndarray,
                     prompt_ids: Sequence[str]) -> float:
    """Spearman correlation of the model's average effect per logged prompt with the observed means.

    When the model's best prompt is not the best observed one, a warning names both: on unconfounded
    logs that means the head cannot represent the logged prompts (typically fewer prompt PCA
    components than logged prompts - 1, so a linear function of T cannot tell them apart); on
    confounded logs the naive means may be the ones that are wrong.
    """
    from scipy.stats import spearmanr

    eff, _ = kernels.score_dense(head.featurize(X).mean(0, keepdims=True), T - head.t_ref, head.coef, head.cov)
    ok = np.isfinite(observed)
    rho = float(spearmanr(eff[0][ok], observed[ok]).statistic) if ok.sum() > 2 else float("nan")
    model_best, seen_best = int(np.argmax(eff[0])), int(np.nanargmax(observed))
    if model_best != seen_best:
        log.warning("the causal model ranks prompt '%s' first (observed training mean %.3f) but '%s' has the best "
                    "observed mean (%.3f); Spearman of model vs observed prompt means %.2f. Unless the logs are "
                    "confounded, the linear head cannot tell the prompts apart: with %d logged prompts and %d "
                    "prompt PCA components, raise pca.prompt_components (up to %d)",
                    prompt_ids[model_best], observed[model_best], prompt_ids[seen_best], observed[seen_best], rho,
                    len(T), T.shape[1], len(T) - 1)
    return rho


def referenced_head(head: LinearHead, X: np.ndarray, T_pool: np.ndarray, reference: str) -> tuple[LinearHead, int]:
    """The head re-referenced to the incumbent (best average predicted effect over ``X`` among
    ``T_pool``), or unchanged for ``reference='mean'``; returns it and the incumbent's index."""
    eff, _ = kernels.score_dense(head.featurize(X).mean(0, keepdims=True), T_pool - head.t_ref, head.coef, head.cov)
    inc = int(np.argmax(eff[0]))
    if reference == "mean":
        return head, inc
    return replace(head, t_ref=np.asarray(T_pool[inc], dtype=np.float64).copy()), inc


def _load_prior(cfg: SearchStageConfig) -> EditPrior | None:
    if cfg.edit_prior is None:
        return None
    if cfg.edit_prior == "auto":
        from cpo_engine.edits.prior import default_prior_path

        path = default_prior_path("math")
        return EditPrior.load(path) if path.is_file() else None
    return EditPrior.load(cfg.edit_prior)


def _task(table: pa.Table, cfg: SearchStageConfig) -> str | None:
    if cfg.task is not None or "task" not in table.column_names:
        return cfg.task
    vc = table.column("task").value_counts().to_pylist()
    return max(vc, key=lambda r: r["counts"])["values"] if vc else None


def generative_stage(table: pa.Table, reps: Any, head: Any, trust: TrustRegion, cfg: SearchStageConfig,
                     embed: Callable[[Sequence[str]], np.ndarray], seed: int) -> SearchResult:
    """Beam search from the logged prompts with the edit proposer, scored for every query."""
    proposer = EditProposer(prior=_load_prior(cfg), task=_task(table, cfg), seed=seed)
    scorer = CandidateScorer(head, reps.X, embed, trust_region=trust, z=cfg.z, length_penalty=cfg.length_penalty,
                             device=cfg.device)
    sc = SearchConfig(rounds=cfg.rounds, beam_width=cfg.beam_width, query_beams=cfg.query_beams,
                      children_per_beam=cfg.children_per_beam, top_k=cfg.top_k, seed=seed)
    seeds = [Candidate.seed(t, id=str(pid)) for pid, t in zip(reps.prompt_ids, reps.prompt_texts)]
    return BeamSearch(proposer, scorer, sc, query_texts=reps.query_texts).run(seeds)


def lineage(result: SearchResult, i: int) -> str:
    """'seed -> op -> op' path of candidate ``i``."""
    by_id = {c.id: c for c in result.candidates}
    c, steps = result.candidates[i], []
    while c.parent is not None and c.parent in by_id:
        steps.append(c.operator or "?")
        c = by_id[c.parent]
    return " -> ".join([c.id] + steps[::-1])


def uplift_vs(head: Any, phibar_X: np.ndarray, T: np.ndarray, t_base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Static uplift (mean over queries) of each row of ``T`` over the prompt at ``t_base``, and its se."""
    eff, se = kernels.score_dense(head.featurize(phibar_X).mean(0, keepdims=True), T - t_base, head.coef, head.cov)
    return eff[0], se[0]


def write_outputs(out: Path, table_rows: dict[str, Any]) -> dict[str, Path]:
    """Write every output file atomically; returns their paths by key."""
    paths = {}
    for key, (name, obj) in table_rows.items():
        path = out / name
        if isinstance(obj, pa.Table):
            atomic_write_parquet(obj, path)
        else:
            atomic_write_json(path, obj)
        paths[key] = path
    return paths


def run_search_stage(table: pa.Table, reps: Any, run_cfg: Any, run_dir: Path,
                     cfg: SearchStageConfig | None = None) -> dict[str, Any]:
    """Split, fit, pool-evaluate, search, and write outputs + report under ``run_dir``."""
    cfg = cfg or SearchStageConfig()
    seed, t0 = int(run_cfg.seed), time.perf_counter()
    y = np.asarray(table.column("score").to_numpy(zero_copy_only=False), dtype=np.float64)
    train, test = split_queries(reps.query_texts, cfg.test_fraction, seed)
    logs = training_logs(table, reps, y, train, cfg, seed)
    causal, outcome = fit_models(reps, logs, cfg, seed)
    timings = {"fit_s": time.perf_counter() - t0}
    trust = TrustRegion(mode=cfg.trust_region, slack=cfg.trust_slack).fit(reps.T)
    pool = pool_stage(reps, y, logs, test, causal, outcome, cfg, trust)
    timings["pool_s"] = time.perf_counter() - t0 - timings["fit_s"]
    result = None
    if cfg.proposer == "edit":
        t1 = time.perf_counter()
        result = generative_stage(table, reps, pool["head"], trust, cfg, prompt_embedder(run_cfg.embed, reps),
                                  seed)
        timings["search_s"] = time.perf_counter() - t1
    from cpo_engine.search._outputs import assemble_outputs

    return assemble_outputs(run_dir, table, reps, cfg, causal, pool, result, train, test, timings)


def print_findings(search: dict[str, Any]) -> None:
    """Console summary of the search stage: pool-mode findings, best searched prompt, report path."""
    from cpo_engine.search._outputs import POLICY_LABELS

    ev = search["evaluation"]
    warnings = ev.get("diagnostics", {}).get("warnings", [])
    print("causal model diagnostics: " + ("; ".join(warnings) if warnings else "no warnings"))
    print(f"pool mode on {ev['n_test_queries']} held-out queries (best static prompt: {ev['static_prompt_id']}):")
    for key, e in ev["evaluations"].items():
        if "skipped" in e:
            print(f"  {POLICY_LABELS[key]:<28} not evaluated: {e['skipped']}")
            continue
        d = e["vs_static"]
        print(f"  {POLICY_LABELS[key]:<28} value {e['policy_value']:.4f} vs static {e['static_value']:.4f}: "
              f"{d['diff']:+.4f} (95% CI {d['ci_low']:+.4f} to {d['ci_high']:+.4f})")
    res = search.get("result")
    if res is not None:
        best = res.candidates[res.best_static]
        print(f"generative search: {len(res.candidates)} candidates scored; best static: {best.text!r}")
    print(f"report: {search['paths']['report']}")


__all__ = ["SearchStageConfig", "run_search_stage", "print_findings", "training_logs", "split_queries", "cell_means", "fit_models", "pool_stage",
           "generative_stage", "prompt_embedder", "lineage", "uplift_vs"]
