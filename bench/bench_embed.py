"""Embedding throughput: the engine's encoder path (dedup + cache) vs a bare sentence-transformers
`encode` loop over the same texts, in the same run; cold and warm cache; and the Ray Data path
(:class:`cpo_engine.embedding.RayEncoder`, one ``map_batches`` stage of encoder actors filling the same
cache) with 1 and 2 actors on a local Ray, each timed cold, actor start-up (model load per actor)
included and also reported on its own.

Quality: cosine agreement between every path's vectors and the bare loop's (must be ~1.0).
Usage: python bench/bench_embed.py [--n 2000] [--batch-size 64] [--threads 2] [--ray-actors 1 2] [--out bench/results]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def texts_from_example(n: int, duplicate_share: float, seed: int) -> list[str]:
    """`n` texts: unique queries and prompts of the bundled example, with a share of repeats
    (triplet tables repeat texts; the engine embeds each once)."""
    from cpo_engine.data import load_example

    t = load_example()
    uniq = list(dict.fromkeys(t["prompt_text"].to_pylist() + t["query_text"].to_pylist()))
    rng = np.random.default_rng(seed)
    n_unique = min(len(uniq), int(round(n * (1 - duplicate_share))))
    base = [uniq[i] for i in rng.permutation(len(uniq))[:n_unique]]
    return base + [base[i] for i in rng.integers(0, n_unique, n - n_unique)]


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float((np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


def ray_paths(enc, texts: list[str], bare: np.ndarray, args: argparse.Namespace) -> dict:
    """Cold-cache embedding through RayEncoder for each actor-pool size on a local Ray (GPU actors share
    the GPU when there is one); also the time of a tiny call (pool start-up and model load alone)."""
    import ray
    import torch

    from cpo_engine.embedding import EmbeddingCache, RayEncoder

    gpus = torch.cuda.device_count()
    ray.init(num_cpus=max(4, int(max(args.ray_actors) * args.ray_cpus_per_actor) + 1), num_gpus=gpus,
             include_dashboard=False, log_to_driver=False, object_store_memory=512 * 2**20)
    out: dict = {"num_gpus": gpus, "pools": {}}
    try:
        for actors in args.ray_actors:
            rayenc = RayEncoder(enc, executor="ray", actors=actors, cpus_per_actor=args.ray_cpus_per_actor,
                                gpus_per_actor=(1.0 / actors) if gpus else 0.0, batch_size=args.ray_batch_size)
            _, t_start = timed(lambda: rayenc.encode(texts[:8]))  # noqa: B023
            with tempfile.TemporaryDirectory() as tmp:
                vecs, t = timed(lambda: EmbeddingCache(tmp).embed(rayenc, texts))  # noqa: B023
            n_unique = len(set(texts))
            out["pools"][f"ray_{actors}_actor{'s' if actors > 1 else ''}"] = {
                "seconds": t, "texts_per_s": len(texts) / t, "pool_start_seconds": t_start,
                "texts_per_s_after_start": n_unique / max(t - t_start, 1e-9), "pool": rayenc.last_pool,
                "min_cosine_vs_bare": min_cosine(vecs, bare)}
    finally:
        ray.shutdown()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="texts to embed")
    ap.add_argument("--duplicate-share", type=float, default=0.0, help="share of repeated texts in the list")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--encoder", default="minilm", help="'minilm' (the packaged weights) or a local sentence-transformers folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ray-actors", type=int, nargs="*", default=[1, 2], help="actor-pool sizes to time (none: skip Ray)")
    ap.add_argument("--ray-cpus-per-actor", type=float, default=1.0)
    ap.add_argument("--ray-batch-size", type=int, default=256)
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()

    import torch

    from cpo_engine.embedding import EmbeddingCache, make_encoder
    from cpo_engine.utils import atomic_write_json, device_info, resolve_device, versions

    torch.set_num_threads(args.threads)
    texts = texts_from_example(args.n, args.duplicate_share, args.seed)
    enc = make_encoder(args.encoder, device=args.device, batch_size=args.batch_size, num_threads=args.threads)
    model = enc.model  # load once, outside the timings
    model.encode(texts[:64], batch_size=args.batch_size)  # warm-up

    bare, t_bare = timed(lambda: model.encode(texts, batch_size=args.batch_size, convert_to_numpy=True,
                                              normalize_embeddings=True, show_progress_bar=False))
    with tempfile.TemporaryDirectory() as tmp:
        cache = EmbeddingCache(tmp)
        cold, t_cold = timed(lambda: cache.embed(enc, texts))
        warm_cache = EmbeddingCache(tmp)  # a fresh process: index read from disk
        warm, t_warm = timed(lambda: warm_cache.embed(enc, texts))
        stats = {"cold_misses": cache.stats.misses, "warm_hits": warm_cache.stats.hits,
                 "warm_misses": warm_cache.stats.misses}
    cos = np.sum(bare * cold, axis=1) / (np.linalg.norm(bare, axis=1) * np.linalg.norm(cold, axis=1))
    ray_res = ray_paths(enc, texts, bare, args) if args.ray_actors else {}
    result = {
        "benchmark": "bench_embed", "n_texts": len(texts), "n_unique": len(set(texts)),
        "texts_per_s": {"bare_st_loop": len(texts) / t_bare, "engine_cold": len(texts) / t_cold,
                        "engine_warm": len(texts) / t_warm},
        "seconds": {"bare_st_loop": t_bare, "engine_cold": t_cold, "engine_warm": t_warm},
        "ratio_vs_bare": {"engine_cold": t_bare / t_cold, "engine_warm": t_bare / t_warm},
        "quality": {"min_cosine_engine_vs_bare": float(cos.min()), "warm_equals_cold": bool(np.array_equal(cold, warm))},
        "cache": stats, "ray": ray_res, "device": {**device_info(), "resolved": resolve_device(args.device)},
        "versions": versions(), "config": vars(args),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = Path(args.out) / f"bench_embed_{result['device']['resolved'].split(':')[0]}.json"
    atomic_write_json(out, result)
    for name, r in ray_res.get("pools", {}).items():
        result["texts_per_s"][name] = r["texts_per_s"]
        result["ratio_vs_bare"][name] = t_bare / r["seconds"]
        result["quality"][f"min_cosine_{name}_vs_bare"] = r["min_cosine_vs_bare"]
    print(json.dumps({k: result[k] for k in ("n_texts", "texts_per_s", "ratio_vs_bare", "quality")}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
