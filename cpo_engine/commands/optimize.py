"""`cpo optimize`: prompt search with a saved causal model on your own queries and prompts.

Reads a triplet table (its queries are the ones to optimize for, its prompts the pool and the
seeds), the model folder and the PCA states written by `cpo fit` (or by `cpo run` under
search/model), and writes a per-query prompt assignment, the best static prompt, every candidate
with lineage and predicted uplift, and the search trace. Scoring needs no LLM call; only the LLM
proposer (``--proposer llm``) calls one, through any OpenAI-compatible server.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cpo_engine.commands import add_common


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("optimize", help="search prompts with a saved causal model (pool and/or generative)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("data", nargs="?", help="triplet table whose queries and prompts to use (default: bundled example)")
    p.add_argument("--model", required=True, help="saved model folder (`cpo fit --out D` writes D/model)")
    p.add_argument("--features", help="folder with query_pca/prompt_pca.safetensors (default: MODEL/../features)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--mode", default="both", choices=["pool", "search", "both"],
                   help="pool: choose per query among the table's prompts; search: beam search (default both)")
    p.add_argument("--proposer", default="edit", choices=["edit", "llm"], help="generative proposer (default edit)")
    p.add_argument("--llm-base-url", default="http://127.0.0.1:8080/v1", help="OpenAI-compatible server (llm)")
    p.add_argument("--llm-model", default="default", help="model name sent to the server (llm)")
    p.add_argument("--edit-prior", help="edit-prior JSON (default: the packaged one when present)")
    p.add_argument("--task", help="task whose edit-prior weights apply")
    p.add_argument("--z", type=float, default=1.645,
                   help="lower-confidence-bound multiplier (default 1.645, one-sided 95%%; 0: point estimate)")
    p.add_argument("--reference", default="incumbent", choices=["incumbent", "mean"],
                   help="measure effects from the table's prompt the model ranks best (default) or from the mean "
                        "logged prompt")
    p.add_argument("--trust-region", default="exclude", choices=["exclude", "penalize", "off"])
    p.add_argument("--length-penalty", type=float, default=0.0, help="objective lost per 100 words")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--beam-width", type=int, default=8)
    p.add_argument("--query-beams", type=int, default=4, help="extra beams: candidates that win the most queries")
    p.add_argument("--children", type=int, default=24, help="children per beam per round")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--device", default="auto", help="scoring device: auto, cpu, cuda")
    add_common(p)
    p.set_defaults(func=run)
    return p


def load_representation(args: argparse.Namespace, cfg: Any, table: Any) -> tuple[Any, Any, Any]:
    """Embed the table's queries and prompts with the saved PCAs; returns (reps-like, model, embed)."""
    from types import SimpleNamespace

    from cpo_engine.causal import CausalRewardModel, representation_provenance
    from cpo_engine.embedding import EmbeddingCache, TorchPCA, make_encoder, unique_texts
    from cpo_engine.exceptions import ConfigError

    feats = Path(args.features) if args.features else Path(args.model).parent / "features"
    qp, pp = feats / "query_pca.safetensors", feats / "prompt_pca.safetensors"
    if not qp.is_file() or not pp.is_file():
        raise ConfigError(f"PCA states not found in {feats} (need query_pca.safetensors and prompt_pca.safetensors); "
                          "pass --features with the folder `cpo fit` wrote")
    qpca, ppca = TorchPCA.load(qp), TorchPCA.load(pp)
    meta = getattr(ppca, "metadata", {}) or {}
    e = cfg.embed
    encoder = make_encoder(e.encoder, device=e.device, batch_size=e.batch_size, num_threads=e.num_threads)
    cache = EmbeddingCache(e.cache_dir) if e.cache_dir else None
    q_pre, p_pre = meta.get("query_prefix", "") or "", meta.get("prompt_prefix", "") or ""

    def raw(texts: list[str], prefix: str) -> Any:
        return cache.embed(encoder, texts, prefix=prefix) if cache else encoder.encode(texts, prefix=prefix)

    qids, qtexts, _ = unique_texts(table, "query_id", "query_text")
    pids, ptexts, _ = unique_texts(table, "prompt_id", "prompt_text")
    reps = SimpleNamespace(query_ids=qids, query_texts=qtexts, prompt_ids=pids, prompt_texts=ptexts,
                           X=qpca.transform(raw(qtexts, q_pre)), T=ppca.transform(raw(ptexts, p_pre)),
                           query_pca=qpca, prompt_pca=ppca,
                           provenance={"encoder": encoder.model_id, "query_prefix": q_pre, "prompt_prefix": p_pre})
    model = CausalRewardModel.load(args.model, expect=representation_provenance(reps))
    return reps, model, lambda texts: ppca.transform(raw(list(texts), p_pre))


def make_proposer(args: argparse.Namespace, seed: int) -> Any:
    """The edit proposer (with its prior) or the LLM proposer on an OpenAI-compatible server."""
    from cpo_engine.search import EditPrior, EditProposer, LLMProposer

    if args.proposer == "llm":
        from cpo_engine.generation.backends import make_backend
        from cpo_engine.generation.types import BackendConfig

        backend = make_backend(BackendConfig(kind="openai", base_url=args.llm_base_url, model=args.llm_model))
        return LLMProposer(backend, seed=seed)
    from cpo_engine.search.stage import SearchStageConfig, _load_prior

    prior = EditPrior.load(args.edit_prior) if args.edit_prior else _load_prior(SearchStageConfig())
    return EditProposer(prior=prior, task=args.task, seed=seed)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from cpo_engine.config import load_config
    from cpo_engine.pipeline import load_data
    from cpo_engine.search import (BeamSearch, Candidate, CandidateScorer, SearchConfig, TrustRegion,
                                   pool_assign)
    from cpo_engine.search._outputs import candidates_table
    from cpo_engine.utils import atomic_write_json, atomic_write_parquet

    cfg = load_config(args.config, args.overrides)
    if args.data:
        cfg.data.path = args.data
    table, _ = load_data(cfg.data)
    reps, model, embed = load_representation(args, cfg, table)
    from cpo_engine.search.stage import referenced_head

    head, _ = referenced_head(model.linear_head(), reps.X, reps.T, args.reference)
    out = Path(args.out)
    trust = TrustRegion(mode=args.trust_region).fit(reps.T)
    scorer = CandidateScorer(head, reps.X, embed, trust_region=trust, z=args.z, length_penalty=args.length_penalty,
                             device=args.device)
    pool = pool_assign(scorer, [str(p) for p in reps.prompt_ids], reps.prompt_texts, T_pool=reps.T)
    static = pool.static_choice()
    cols: dict[str, Any] = {"query_id": reps.query_ids.astype(str), "pool_prompt_id": pool.chosen_ids,
                            "pool_effect": pool.effect[np.arange(len(pool.choice)), pool.choice],
                            "pool_se": pool.se[np.arange(len(pool.choice)), pool.choice]}
    best: dict[str, Any] = {"pool_static": {"prompt_id": pool.prompt_ids[static], "text": reps.prompt_texts[static]}}
    if args.mode in ("search", "both"):
        sc = SearchConfig(rounds=args.rounds, beam_width=args.beam_width, query_beams=args.query_beams,
                          children_per_beam=args.children, top_k=args.top_k, seed=cfg.seed)
        seeds = [Candidate.seed(t, id=str(p)) for p, t in zip(reps.prompt_ids, reps.prompt_texts)]
        res = BeamSearch(make_proposer(args, cfg.seed), scorer, sc, query_texts=reps.query_texts).run(seeds)
        cands = candidates_table(res, reps, head, static)
        top = res.topk_index[:, 0]
        cols.update(search_candidate_id=[res.candidates[i].id if i >= 0 else None for i in top],
                    search_prompt_text=[res.candidates[i].text if i >= 0 else None for i in top],
                    search_effect=res.topk_effect[:, 0], search_se=res.topk_se[:, 0])
        atomic_write_parquet(cands, out / "candidates.parquet")
        atomic_write_json(out / "search_trace.json", res.trace)
        best["search_static"] = cands.slice(0, 1).to_pylist()[0]
        print(f"searched {len(res.candidates)} candidates; best static: {best['search_static']['text']!r} "
              f"(uplift vs '{pool.prompt_ids[static]}' {best['search_static']['uplift_vs_best_logged']:+.4f})")
    import pyarrow as pa

    if args.mode == "search":
        cols = {k: v for k, v in cols.items() if not k.startswith("pool_")}
    atomic_write_parquet(pa.table(cols), out / "assignment.parquet")
    atomic_write_json(out / "best_static_prompt.json", best)
    print(f"wrote {out}/assignment.parquet, best_static_prompt.json"
          + (", candidates.parquet, search_trace.json" if args.mode != "pool" else ""))
    return 0
