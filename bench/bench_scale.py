"""Scale benchmark: the whole pipeline at millions of triplets, with time and peak memory per stage and how
each stage grows with n.

Synthetic but realistic logs: ``n / 10`` queries, 10 prompts each out of a pool of 1,000 (chosen with
mild confounding: queries high on a latent trait get more prompts of one kind), a score that depends
on the query, the prompt and their interaction, ~100-character query texts. Embeddings are drawn at
random from a low-rank model (query and prompt latents times fixed loadings, plus noise), regenerated
block by block from a seed, so the encoder is not the cost and no stage holds all 384-d vectors.

Stages, each timed with its peak resident memory (the peak is reset before every stage):

- ``read``: the Parquet shards -> one Arrow table (``cpo_engine.data.read_table``);
- ``validate``: the triplet contract (``validate_triplets``: casts, nulls, one text per id, duplicates);
- ``represent``: unique queries / prompts and row indices, then streaming PCA of the query (16) and
  prompt (8) embeddings and the projection (``unique_texts``, ``TorchPCA``); the table is dropped here;
- ``fit``: the causal model as ``cpo run`` fits it (``CausalConfig()`` defaults: ridge nuisances, linear
  phi, 5 grouped folds, final_alpha 'cv'), on every row;
- ``score``: 10,000 candidate prompts for every query, per-query top-k (``kernels.score_topk``, the
  backend ``auto`` picks).

Each size runs in a fresh process (a clean memory baseline); econml ``LinearDML`` (RidgeCV nuisances,
the same folds) is fitted on the same rows in its own process, at every size up to the first it does
not finish (time limit or memory cap). The JSON holds, per stage, time, CPU time, peak RSS and the
growth slope of log time and log peak memory against log n, plus a quality number beside every
speed (effect RMSE against the generator's truth; recall@k of the scoring pass).

    python bench/bench_scale.py --sizes 1000000                      # validate (minutes)
    python bench/bench_scale.py --sizes 1000000 3000000 10000000      # the full run
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

DIM = 384  # embedding width (MiniLM's)
LATENT_Q, LATENT_P = 16, 8  # latent traits behind the query and prompt embeddings
BLOCK = 65_536  # queries per embedding block (regenerated from the seed, never all held)
SHARD_QUERIES = 100_000  # queries per Parquet shard
STAGES = ("read", "validate", "represent", "fit", "score")


@dataclass(frozen=True)
class Spec:
    """One benchmark size and the data model behind it."""

    n_rows: int
    prompts_per_query: int = 10
    n_prompts: int = 1000
    query_components: int = 16
    prompt_components: int = 8
    candidates: int = 10_000
    k: int = 5
    z: float = 1.645
    confounding: float = 1.0
    noise: float = 0.05
    seed: int = 0

    @property
    def n_queries(self) -> int:
        return self.n_rows // self.prompts_per_query


# ---------------------------------------------------------------------------------------------- data


@dataclass
class Truth:
    """The generator's parameters (small): latents of queries and prompts and the true effect model."""

    Z: np.ndarray  # (n_queries, LATENT_Q) float32
    U: np.ndarray  # (n_prompts, LATENT_P)
    B: np.ndarray  # (1 + LATENT_Q, LATENT_P): theta(Z) = B^T [1, Z]
    Aq: np.ndarray  # (LATENT_Q, DIM) loadings of the query embeddings
    Ap: np.ndarray  # (LATENT_P, DIM)

    def effect(self, q: np.ndarray, p: np.ndarray, p_ref: np.ndarray) -> np.ndarray:
        """True score change of moving query q from prompt p_ref to prompt p."""
        theta = np.hstack([np.ones((len(q), 1)), self.Z[q]]) @ self.B
        return np.sum(theta * (self.U[p] - self.U[p_ref]), axis=1)


def make_truth(spec: Spec) -> Truth:
    rng = np.random.default_rng([spec.seed, 0])
    Z = rng.normal(size=(spec.n_queries, LATENT_Q)).astype(np.float32)
    U = rng.normal(size=(spec.n_prompts, LATENT_P))
    B = rng.normal(size=(1 + LATENT_Q, LATENT_P)) * 0.02
    B[0] *= 3.0  # a common part of the effect, and a smaller query-dependent part
    Aq = rng.normal(size=(LATENT_Q, DIM)) / np.sqrt(DIM)
    Ap = rng.normal(size=(LATENT_P, DIM)) / np.sqrt(DIM)
    return Truth(Z, U, B, Aq, Ap)


def query_embeddings(spec: Spec, truth: Truth, block: int) -> np.ndarray:
    """Embeddings of queries [block * BLOCK, ...): the same values however often they are drawn."""
    lo, hi = block * BLOCK, min((block + 1) * BLOCK, spec.n_queries)
    noise = np.random.default_rng([spec.seed, 1, block]).normal(size=(hi - lo, DIM)).astype(np.float32)
    return truth.Z[lo:hi] @ truth.Aq.astype(np.float32) + spec.noise * noise


def prompt_embeddings(spec: Spec, truth: Truth) -> np.ndarray:
    noise = np.random.default_rng([spec.seed, 2]).normal(size=(spec.n_prompts, DIM))
    return truth.U @ truth.Ap + spec.noise * noise


def _assign_prompts(spec: Spec, truth: Truth, lo: int, hi: int, rng: np.random.Generator) -> np.ndarray:
    """(hi - lo, prompts_per_query) distinct prompts per query: Gumbel top-k, so a query high on its first
    latent trait draws prompts high on theirs more often (confounding through the latents)."""
    side = np.sign(truth.U[:, 0])
    keys = rng.gumbel(size=(hi - lo, spec.n_prompts)) + spec.confounding * truth.Z[lo:hi, :1] * side[None, :]
    return np.argpartition(-keys, spec.prompts_per_query, axis=1)[:, :spec.prompts_per_query]


def _shard(spec: Spec, truth: Truth, lo: int, hi: int, phrases: list[str], prompt_texts: Any) -> Any:
    """Rows of queries [lo, hi) as an Arrow table (texts dictionary-encoded, as Parquet stores them)."""
    import pyarrow as pa

    rng = np.random.default_rng([spec.seed, 3, lo])
    m = spec.prompts_per_query
    parts = [_assign_prompts(spec, truth, s, min(s + 10_000, hi), rng) for s in range(lo, hi, 10_000)]
    prompts = np.concatenate(parts).ravel()
    q = np.repeat(np.arange(lo, hi), m)
    theta = np.hstack([np.ones((len(q), 1), np.float32), truth.Z[q]]) @ truth.B
    y = (0.5 + 0.15 * np.tanh(truth.Z[q, 0]) + 0.05 * truth.Z[q, 1] + np.sum(theta * truth.U[prompts], axis=1)
         + 0.3 * rng.normal(size=len(q)))
    local = pa.array(np.repeat(np.arange(hi - lo, dtype=np.int32), m))
    qids = pa.array([f"q{i:08d}" for i in range(lo, hi)])
    qtexts = pa.array([f"Query {i}: {phrases[i % len(phrases)]}" for i in range(lo, hi)])
    pidx = pa.array(prompts.astype(np.int32))
    return pa.table({
        "query_id": pa.DictionaryArray.from_arrays(local, qids),
        "query_text": pa.DictionaryArray.from_arrays(local, qtexts),
        "prompt_id": pa.DictionaryArray.from_arrays(pidx, pa.array([f"p{j:04d}" for j in range(spec.n_prompts)])),
        "prompt_text": pa.DictionaryArray.from_arrays(pidx, prompt_texts),
        "score": pa.array(y, pa.float64()),
        "sample": pa.array(np.zeros(len(q), np.int64)),
        "task": pa.DictionaryArray.from_arrays(pa.array(np.zeros(len(q), np.int32)), pa.array(["synthetic"])),
    })


def write_dataset(spec: Spec, truth: Truth, folder: Path) -> int:
    """Parquet shards of the logs (SHARD_QUERIES queries each); returns bytes written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    words = np.random.default_rng([spec.seed, 4]).choice(
        ["how", "many", "apples", "train", "hours", "does", "total", "left", "each", "cost", "miles", "if", "she",
         "buys", "sells", "twice", "half", "more", "than", "per", "week", "after", "tickets", "boxes"], size=(4096, 16))
    phrases = [" ".join(w) + "?" for w in words]
    prompt_texts = pa.array([f"Prompt {j}: " + " ".join(words[j % 4096, :10]) + ". The answer is:"
                             for j in range(spec.n_prompts)])
    folder.mkdir(parents=True, exist_ok=True)
    for i, lo in enumerate(range(0, spec.n_queries, SHARD_QUERIES)):
        table = _shard(spec, truth, lo, min(lo + SHARD_QUERIES, spec.n_queries), phrases, prompt_texts)
        pq.write_table(table, folder / f"part-{i:05d}.parquet")
    return sum(f.stat().st_size for f in folder.glob("*.parquet"))


# ------------------------------------------------------------------------------------------ metering


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (Linux), so the next stage's peak is its own."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Meter:
    """Wall time, CPU time and peak RSS of each stage, in a dict per stage."""

    def __init__(self) -> None:
        self.stages: dict[str, dict[str, Any]] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[dict[str, Any]]:
        gc.collect()
        exact = reset_peak()
        rss0 = (_status_kb("VmRSS") or 0) / 1024
        rec: dict[str, Any] = {}
        t0, c0 = time.perf_counter(), time.process_time()
        yield rec
        peak = (_status_kb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024
        rec.update(seconds=round(time.perf_counter() - t0, 3), cpu_seconds=round(time.process_time() - c0, 3),
                   rss_start_mb=round(rss0, 1), peak_rss_mb=round(peak, 1),
                   peak_above_start_mb=round(max(peak - rss0, 0.0), 1), peak_is_stage_own=exact)
        self.stages[name] = rec
        print(f"  {name:<10} {rec['seconds']:8.2f} s  peak {rec['peak_rss_mb']:8.0f} MB "
              f"(+{rec['peak_above_start_mb']:.0f})", flush=True)


# ------------------------------------------------------------------------------------------ pipeline


def _query_index(ids: np.ndarray) -> np.ndarray:
    return np.array([int(s[1:]) for s in ids], dtype=np.int64)


def represent(spec: Spec, truth: Truth, table: Any, rec: dict[str, Any], device: str) -> dict[str, Any]:
    """Unique ids and row indices (the engine's ``unique_texts``), then the two PCAs, streaming."""
    from cpo_engine.embedding import TorchPCA, unique_texts

    qids, _, row_q = unique_texts(table, "query_id", "query_text")
    pids, _, row_p = unique_texts(table, "prompt_id", "prompt_text")
    n_blocks = -(-spec.n_queries // BLOCK)
    qpca = TorchPCA(spec.query_components, device=device).fit(query_embeddings(spec, truth, b) for b in range(n_blocks))
    X_by_index = np.concatenate([qpca.transform(query_embeddings(spec, truth, b)) for b in range(n_blocks)])
    p_emb = prompt_embeddings(spec, truth)
    ppca = TorchPCA(spec.prompt_components, device=device).fit(p_emb)
    q_index, p_index = _query_index(qids), np.array([int(s[1:]) for s in pids])
    rec.update(query_explained_variance=float(qpca.explained_variance_ratio_.sum()),
               prompt_explained_variance=float(ppca.explained_variance_ratio_.sum()))
    return {"X": X_by_index[q_index], "T": ppca.transform(p_emb[p_index]), "row_q": row_q, "row_p": row_p,
            "q_index": q_index, "p_index": p_index}


def effect_rmse(spec: Spec, truth: Truth, reps: dict[str, Any], effect_fn: Any, n: int = 20_000) -> dict[str, float]:
    """RMSE and correlation of predicted vs true effects of moving a query between two prompts."""
    rng = np.random.default_rng([spec.seed, 5])
    q = rng.integers(0, len(reps["X"]), n)
    p, p_ref = rng.integers(0, len(reps["T"]), n), rng.integers(0, len(reps["T"]), n)
    pred = effect_fn(reps["X"][q], reps["T"][p], reps["T"][p_ref])
    true = truth.effect(reps["q_index"][q], reps["p_index"][p], reps["p_index"][p_ref])
    return {"effect_rmse": float(np.sqrt(np.mean((pred - true) ** 2))), "effect_sd": float(true.std()),
            "effect_corr": float(np.corrcoef(pred, true)[0, 1])}


def candidates(spec: Spec, T: np.ndarray) -> np.ndarray:
    """``spec.candidates`` candidate prompts: logged prompts moved at random in T space."""
    rng = np.random.default_rng([spec.seed, 6])
    return T[rng.integers(0, len(T), spec.candidates)] + 0.3 * T.std(0) * rng.normal(size=(spec.candidates, T.shape[1]))


def warm_up_scoring(spec: Spec, head: Any, X: np.ndarray, cand: np.ndarray, device: str) -> dict[str, Any]:
    """Load (or compile) the kernel the full pass will use, on a few queries, outside the timed stage."""
    import torch

    from cpo_engine.kernels import dispatch as kernels

    dev = "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    backend = kernels.choose_backend("auto", dev, torch.float32, len(X) * len(cand))
    t0 = time.perf_counter()
    kernels.score_topk(head.featurize(X[:256]), cand - head.t_ref, head.coef, head.cov, spec.k, z=spec.z, device=dev,
                       backend=backend)
    return {"backend": backend, "device": dev, "first_call_seconds": round(time.perf_counter() - t0, 3)}


def score_all(spec: Spec, head: Any, X: np.ndarray, cand: np.ndarray, rec: dict[str, Any], warm: dict) -> Any:
    """Every candidate for every query, per-query top-k: the search's scoring pass at scale."""
    from cpo_engine.kernels import dispatch as kernels

    top = kernels.score_topk(head.featurize(X), cand - head.t_ref, head.coef, head.cov, spec.k, z=spec.z,
                             device=warm["device"], backend=warm["backend"])
    rec.update(backend=top.backend, pairs=len(X) * len(cand), queries=len(X), candidates=len(cand),
               warm_up_seconds=warm["first_call_seconds"])
    return top


def score_recall(spec: Spec, head: Any, X: np.ndarray, cand: np.ndarray, top: Any, n: int = 500) -> float:
    """recall@k of the scoring pass against the float64 dense reference on ``n`` queries."""
    est, se = head.effect(X[:n], cand)
    ref = np.argsort(-(est - spec.z * se), axis=1)[:, :spec.k]
    return float(np.mean([len(set(a) & set(b)) / spec.k for a, b in zip(top.indices[:n], ref)]))


def pipeline(spec: Spec, workdir: Path, threads: int, device: str) -> dict[str, Any]:
    """Generate the data, then run and meter every stage; returns the per-stage records."""
    import torch

    from cpo_engine.causal.config import CausalConfig
    from cpo_engine.data import read_table, validate_triplets

    torch.set_num_threads(threads)
    meter = Meter()
    folder = workdir / f"triplets_{spec.n_rows}"
    truth = make_truth(spec)
    t0 = time.perf_counter()
    nbytes = write_dataset(spec, truth, folder)
    gen = {"seconds": round(time.perf_counter() - t0, 2), "parquet_mb": round(nbytes / 2**20, 1)}
    print(f"n = {spec.n_rows:,}: generated {gen['parquet_mb']:.0f} MB of Parquet in {gen['seconds']:.0f} s", flush=True)
    with meter.stage("read") as rec:
        table = read_table(folder)
        rec["arrow_mb"] = round(table.nbytes / 2**20, 1)
    raw = table
    with meter.stage("validate"):
        table = validate_triplets(raw, source=str(folder))
    # The same validation again in this process, its memory already mapped: the first pass also pays the
    # kernel for every fresh page it touches (slow in a VM), the repeat is the checks' own cost.
    t0 = time.perf_counter()
    validate_triplets(raw, source=str(folder))
    meter.stages["validate"]["repeat_seconds"] = round(time.perf_counter() - t0, 3)
    del raw
    with meter.stage("represent") as rec:
        reps = represent(spec, truth, table, rec, device)
        y = table.column("score").to_numpy()
        del table  # the rows are indices and scores from here on
    with meter.stage("fit") as rec:
        model = CausalConfig().make_model(device=device, random_state=spec.seed)
        model.fit(y, reps["T"][reps["row_p"]], X=reps["X"][reps["row_q"]], groups=reps["row_q"])
        rec["final_alpha"] = float(model.final_alpha_) if not isinstance(model.final_alpha_, str) else None
    head = model.linear_head()
    quality = {"fit": effect_rmse(spec, truth, reps, lambda X, T, T0: _head_effect(head, X, T, T0))}
    cand = candidates(spec, reps["T"])
    warm = warm_up_scoring(spec, head, reps["X"], cand, device)
    with meter.stage("score") as rec:
        top = score_all(spec, head, reps["X"], cand, rec, warm)
    score = meter.stages["score"]
    score["pairs_per_second"] = round(score["pairs"] / score["seconds"])
    quality["score"] = {"recall_at_k": score_recall(spec, head, reps["X"], cand, top), "k": spec.k}
    arrays = _save_for_econml(workdir, spec, reps, y)
    shutil.rmtree(folder, ignore_errors=True)
    return {"n_rows": spec.n_rows, "n_queries": spec.n_queries, "generate": gen, "stages": meter.stages,
            "quality": quality, "econml_arrays": arrays}


def _head_effect(head: Any, X: np.ndarray, T: np.ndarray, T0: np.ndarray) -> np.ndarray:
    theta = head.featurize(X) @ head.coef
    return np.sum(theta * (T - T0), axis=1)


def _save_for_econml(workdir: Path, spec: Spec, reps: dict[str, Any], y: np.ndarray) -> str:
    """The fit's rows as .npy files (memory-mapped by the econml process); returns the folder."""
    out = workdir / f"rows_{spec.n_rows}"
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "y.npy", y)
    np.save(out / "groups.npy", reps["row_q"])
    for name, M, idx in (("X", reps["X"], reps["row_q"]), ("T", reps["T"], reps["row_p"])):
        mm = np.lib.format.open_memmap(out / f"{name}.npy", mode="w+", dtype=np.float64, shape=(len(idx), M.shape[1]))
        for s in range(0, len(idx), 1 << 20):
            mm[s:s + (1 << 20)] = M[idx[s:s + (1 << 20)]]
        mm.flush()
        del mm
    # truth for the econml effect RMSE (the same pairs as the engine's)
    np.save(out / "q_index.npy", reps["q_index"])
    np.save(out / "p_index.npy", reps["p_index"])
    np.save(out / "Xq.npy", reps["X"])
    np.save(out / "Tp.npy", reps["T"])
    return str(out)


# ------------------------------------------------------------------------------------- econml ladder


def baseline_fit(spec: Spec, folder: str, n_rows: int, method: str, mem_cap_gb: float) -> dict[str, Any]:
    """Fit ``method`` ('econml': LinearDML with RidgeCV nuisances and the engine's kind of grouped folds;
    'engine': the causal model as ``cpo run`` fits it) on the first ``n_rows`` saved rows (whole queries)."""
    import warnings

    if mem_cap_gb > 0:
        cap = int(mem_cap_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    warnings.filterwarnings("ignore")
    f = Path(folder)
    y, groups = np.load(f / "y.npy")[:n_rows], np.load(f / "groups.npy")[:n_rows]
    X = np.asarray(np.load(f / "X.npy", mmap_mode="r")[:n_rows])
    T = np.asarray(np.load(f / "T.npy", mmap_mode="r")[:n_rows])
    meter = Meter()
    if method == "econml":
        from econml.dml import LinearDML
        from sklearn.linear_model import RidgeCV

        fold = np.random.default_rng(spec.seed).permutation(groups.max() + 1)[groups] % 5
        folds = [(np.flatnonzero(fold != i), np.flatnonzero(fold == i)) for i in range(5)]
        alphas = tuple(float(a) for a in np.logspace(-3, 3, 13))
        model = LinearDML(model_y=RidgeCV(alphas=alphas), model_t=RidgeCV(alphas=alphas), cv=folds,
                          random_state=spec.seed)
        with meter.stage(method):
            model.fit(y, T, X=X)

        def eff(Xs: np.ndarray, Ts: np.ndarray, T0: np.ndarray) -> np.ndarray:
            return np.sum(np.asarray(model.const_marginal_effect(Xs)).reshape(len(Xs), -1) * (Ts - T0), axis=1)
    else:
        from cpo_engine.causal.config import CausalConfig

        engine = CausalConfig().make_model(device="cpu", random_state=spec.seed)
        with meter.stage(method):
            engine.fit(y, T, X=X, groups=groups)
        head = engine.linear_head()

        def eff(Xs: np.ndarray, Ts: np.ndarray, T0: np.ndarray) -> np.ndarray:
            return _head_effect(head, Xs, Ts, T0)
    reps = {"X": np.load(f / "Xq.npy"), "T": np.load(f / "Tp.npy"), "q_index": np.load(f / "q_index.npy"),
            "p_index": np.load(f / "p_index.npy")}
    return {"method": method, "n_rows": n_rows, **meter.stages[method],
            "quality": effect_rmse(spec, make_truth(spec), reps, eff)}


# ------------------------------------------------------------------------------------------- driver


def _child(target: str, spec: dict, args: tuple, queue: Any) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    try:
        if target == "first_touch_cost":
            queue.put(first_touch_cost(*args))
            return
        fn = pipeline if target == "pipeline" else baseline_fit
        queue.put(fn(Spec(**spec), *args))
    except MemoryError as exc:
        queue.put({"n_rows": spec["n_rows"], "error": f"MemoryError: {exc}"})
    except Exception as exc:  # noqa: BLE001  (the parent records any failure of a size)
        queue.put({"n_rows": spec["n_rows"], "error": f"{type(exc).__name__}: {exc}"})


def run_child(target: str, spec: Spec, args: tuple, timeout: float) -> dict[str, Any]:
    """Run ``pipeline``, ``baseline_fit`` or ``first_touch_cost`` in a fresh process (a clean memory baseline); never raises."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(target, asdict(spec), args, queue))
    proc.start()
    deadline = time.monotonic() + timeout
    result = None
    while result is None and time.monotonic() < deadline:
        try:
            result = queue.get(timeout=5)
        except Exception:  # noqa: BLE001  (queue.Empty: still running)
            if not proc.is_alive():
                break
    if result is None:
        proc.terminate()
        proc.join(10)
        why = f"timed out after {timeout:.0f} s" if proc.exitcode in (None, -15) else f"exit code {proc.exitcode}"
        return {"n_rows": spec.n_rows, "error": why}
    proc.join(30)
    return result


def first_touch_cost(mb: int = 1024) -> dict[str, float]:
    """What touching fresh memory costs on this host: fill ``mb`` MiB of newly mapped pages (each page
    faulted in by the kernel), then fill the same pages again (no faults). The difference per MiB is
    the floor any stage pays for the memory it grows by (large on VMs, small on bare metal)."""
    a = np.empty(mb * 2**20, dtype=np.uint8)
    t0 = time.perf_counter()
    a.fill(1)
    fresh = time.perf_counter() - t0
    t0 = time.perf_counter()
    a.fill(2)
    reused = time.perf_counter() - t0
    del a
    return {"mb": mb, "fresh_seconds": round(fresh, 3), "reused_seconds": round(reused, 3),
            "seconds_per_gb_fresh": round((fresh - reused) * 1024 / mb, 3),
            "microseconds_per_4k_page": round((fresh - reused) / (mb * 256) * 1e6, 2)}


def slopes(runs: list[dict[str, Any]], key: str, names: tuple[str, ...]) -> dict[str, float | None]:
    """Least-squares slope of log(value) against log(n_rows) per stage (1.0: linear growth)."""
    out: dict[str, float | None] = {}
    for name in names:
        pts = [(r["n_rows"], r["stages"][name][key]) for r in runs if "stages" in r and r["stages"][name][key] > 0]
        if len(pts) < 2:
            out[name] = None
            continue
        x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
        out[name] = round(float(np.polyfit(x, y, 1)[0]), 3)
    return out


def _ladder_step(spec: Spec, folder: str, m: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """econml at ``m`` rows (a prefix of whole queries of the saved rows), then the engine on the same rows."""
    econ = run_child("baseline", spec, (folder, m, "econml", args.econml_mem_gb), args.econml_timeout)
    econ.setdefault("method", "econml")
    print(json.dumps(econ), flush=True)
    if "error" in econ:
        return [econ]
    eng = run_child("baseline", spec, (folder, m, "engine", 0.0), args.timeout)
    eng.setdefault("method", "engine")
    print(json.dumps(eng), flush=True)
    return [econ, eng]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 3_000_000, 10_000_000], help="triplet rows")
    p.add_argument("--candidates", type=int, default=10_000, help="candidate prompts scored for every query")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch / Numba threads")
    p.add_argument("--device", default="auto", help="where PCA, the fit and the scoring run ('auto': CUDA when present)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per size before giving up")
    p.add_argument("--econml-sizes", type=int, nargs="*", default=[100_000, 300_000, 1_000_000, 3_000_000, 10_000_000],
                   help="rows econml LinearDML (and the engine, on the same rows) are fitted on, smallest first, "
                        "until econml does not finish; each no larger than the largest --sizes")
    p.add_argument("--econml-timeout", type=float, default=900.0, help="seconds per econml fit")
    p.add_argument("--econml-mem-gb", type=float, default=12.0, help="address-space cap of the econml process")
    p.add_argument("--no-econml", action="store_true")
    p.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = p.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from cpo_engine.utils import atomic_write_json, device_info, versions

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP workers must not spin (Numba, torch)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="cpo_bench_scale_"))
    touch = run_child("first_touch_cost", Spec(n_rows=0), (), 120.0)  # a fresh process: fresh pages
    print(f"first touch of fresh memory: {touch.get('seconds_per_gb_fresh')} s per GB "
          f"({touch.get('microseconds_per_4k_page')} us per 4 KiB page)", flush=True)
    runs: list[dict[str, Any]] = []
    ladder: list[dict[str, Any]] = []
    try:
        prev = 0
        for n in sorted(args.sizes):
            spec = Spec(n_rows=n, candidates=args.candidates)
            runs.append(run_child("pipeline", spec, (work, args.threads, args.device), args.timeout))
            print(json.dumps({k: v for k, v in runs[-1].items() if k != "econml_arrays"}), flush=True)
            folder = runs[-1].pop("econml_arrays", None)
            for m in [m for m in sorted(args.econml_sizes) if prev < m <= n] if folder and not args.no_econml else []:
                if any("error" in r for r in ladder):
                    break
                ladder += _ladder_step(spec, folder, m, args)
            prev = n
            if folder:
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    ok = [r for r in runs if "stages" in r]
    done = {r["n_rows"]: r for r in ladder if r.get("method") == "econml" and "error" not in r}
    engine = {r["n_rows"]: r for r in ladder if r.get("method") == "engine" and "error" not in r}
    report = {
        "benchmark": "bench_scale", "device": device_info(), "versions": versions(),
        "config": vars(args) | {"spec": asdict(Spec(n_rows=0, candidates=args.candidates)), "embedding_dim": DIM},
        "runs": runs, "fit_ladder": ladder,
        "growth_slope_time": slopes(ok, "seconds", STAGES),
        "growth_slope_cpu_time": slopes(ok, "cpu_seconds", STAGES),
        "growth_slope_peak_memory": slopes(ok, "peak_above_start_mb", STAGES),
        "growth_slope_validate_repeat": slopes(ok, "repeat_seconds", ("validate",))["validate"],
        "first_touch": touch,
        "econml_largest_finished": max(done, default=None),
        "fit_time_ratio_econml_vs_engine": {str(n): round(done[n]["seconds"] / engine[n]["seconds"], 2)
                                            for n in done if n in engine},
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    dev = "cuda" if report["device"].get("cuda") else "cpu"
    path = Path(args.out) / f"bench_scale_{dev}.json"
    atomic_write_json(path, report)
    print(json.dumps({k: report[k] for k in ("growth_slope_time", "growth_slope_cpu_time", "growth_slope_peak_memory",
                                             "growth_slope_validate_repeat",
                                             "econml_largest_finished", "fit_time_ratio_econml_vs_engine")}, indent=1))
    print(f"wrote {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
