"""The verify stage: run the recommended prompts with the LLM on held-out queries and measure them.

The search's numbers are predictions of the causal model; this stage measures them. It takes the
incumbent (the logged prompt the model ranks best), the best static logged prompt, the search's
top-K prompts (and, with ``verify.seeds='all'``, every logged prompt) and the per-query policy
restricted to those prompts, runs every prompt on every sampled held-out query through the
configured backend (the resumable triplet store of `cpo generate`), grades the answers with the
run's grader, and reports:

* the measured value of each prompt and its paired difference from the incumbent with a 95%
  interval (queries are the pairing unit; samples of a cell are averaged first);
* the measured value of the per-query policy (each query routed by the model's lower confidence
  bound among the verified prompts; since every prompt ran on every query, this costs no extra call);
* the model's calibration on these prompts: predicted vs measured uplift, their Spearman and
  Kendall rank correlations, the mean absolute error and how often the predicted 95% interval
  covered the measured uplift.

Outputs (``OUT/verify/``): ``verification.json`` and ``verification.md`` (every number labelled
measured or predicted, :mod:`cpo_engine.causal.evidence`), ``verified_triplets.parquet`` (the new
triplets, appended to ``verify.append_to`` when set so the next fit learns from them) and the
generation store under ``llm/``. The run's ``assignment.parquet`` and ``candidates.parquet`` gain a
``verification`` column (``verified`` / ``predicted only``) and the report a verification section.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence, TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cpo_engine.causal.evidence import MEASURED, PREDICTED, LabelledValue
from cpo_engine.causal.verification import Z95, calibration, labelled, promotable, verdict
from cpo_engine.exceptions import ConfigError, DataError
from cpo_engine.search.config import SelectionConfig
from cpo_engine.utils import atomic_write_json, atomic_write_parquet, atomic_write_text, sha256_text
from cpo_engine.settings import LLMConfig, OptimizeConfig, VerifyConfig, VerifyJobConfig
from cpo_engine.workflows.common import MANIFEST, read_kind, write_manifest

if TYPE_CHECKING:
    from cpo_engine.generation.types import Backend
    from cpo_engine.embedding.config import EmbedConfig
    from cpo_engine.policy.represent import Representer

log = logging.getLogger(__name__)

FORMAT = "cpo-verification/1"
VERIFIED, PREDICTED_ONLY = "verified", "predicted only"


@dataclass(frozen=True)
class Arm:
    """One prompt the verify stage runs: its id, text and why it is there."""

    id: str
    text: str
    role: str
    """'incumbent', 'best_static', 'searched', 'logged' (another logged prompt) or 'live' (nightly)."""


@dataclass
class Recommendations:
    """What a run recommends, gathered from its folder: the prompts to verify and the files to mark."""

    model: Path
    """The model bundle (or the folder holding one)."""
    arms: list[Arm]
    """Baseline first: the incumbent (or the live prompt)."""
    assignment: Path | None = None
    candidates: Path | None = None
    report: Path | None = None
    held_out: list[str] | None = None
    """Query ids the fit never saw (`cpo run`'s held-out split), the default verification queries."""


@dataclass
class VerifyResult:
    """What the stage measured (``report`` is ``verification.json``)."""

    out: Path
    report: dict[str, Any]
    arms: list[Arm]
    Y: np.ndarray
    """(n_queries, n_arms) measured mean score of each cell."""
    choice: np.ndarray
    """Arm routed to each query by the per-query policy."""

    def measured_uplift(self, arm_id: str) -> dict[str, Any] | None:
        return next((a["uplift_vs_baseline"] for a in self.report["arms"] if a["id"] == arm_id), None)


# ---------------------------------------------------------------------------------------- arms


def pick_arms(pool_ids: Sequence[str], pool_texts: Sequence[str], incumbent: int, static: int,
              searched: pa.Table | None, cfg: VerifyConfig) -> list[Arm]:
    """The incumbent, the best static logged prompt, ``cfg.top_k`` searched prompts (best static
    objective first, in the trust region, not a logged prompt) and, with ``seeds='all'``, every other
    logged prompt. Duplicate texts are run once."""
    from cpo_engine.taxonomy import dedup_key

    arms = [Arm(str(pool_ids[incumbent]), pool_texts[incumbent], "incumbent")]
    if static != incumbent:
        arms.append(Arm(str(pool_ids[static]), pool_texts[static], "best_static"))
    if cfg.seeds == "all":
        arms += [Arm(str(i), t, "logged") for i, t in zip(pool_ids, pool_texts)]
    seen = {dedup_key(a.text) for a in arms}
    logged = {dedup_key(t) for t in pool_texts}
    if searched is not None and cfg.top_k:
        rows = searched.to_pylist()
        ok = [r for r in rows if r.get("in_support", True) and _finite(r.get("objective", 0.0))
              and dedup_key(r["text"]) not in logged]
        for r in ok:
            if sum(a.role == "searched" for a in arms) >= cfg.top_k:
                break
            if dedup_key(r["text"]) not in seen:
                seen.add(dedup_key(r["text"]))
                arms.append(Arm(str(r["id"]), r["text"], "searched"))
    return dedupe_arms(arms)


def dedupe_arms(arms: list[Arm]) -> list[Arm]:
    from cpo_engine.taxonomy import dedup_key

    out, keys = [], set()
    for a in arms:
        if dedup_key(a.text) not in keys:
            keys.add(dedup_key(a.text))
            out.append(a)
    return out


def _finite(x: Any) -> bool:
    return x is not None and math.isfinite(float(x))


def read_run(run_dir: str | Path, table: pa.Table, cfg: VerifyConfig) -> Recommendations:
    """The recommendations of a `cpo run` folder (its model, pool choice, search and held-out split)."""
    run_dir = Path(run_dir)
    search = run_dir / "search"
    ev_path = search / "pool_evaluation.json"
    ev = _folder_json(ev_path, "finished `cpo run`")
    arms = _arms(table, cfg.incumbent or ev["incumbent_prompt_id"], ev["static_prompt_id"],
                 search / "candidates.parquet", cfg, str(ev_path) if cfg.incumbent is None else "verify.incumbent")
    assignment = pq.read_table(search / "assignment.parquet", columns=["query_id", "split"])
    held_out = [q for q, s in zip(assignment["query_id"].to_pylist(), assignment["split"].to_pylist()) if s == "test"]
    return Recommendations(model=run_dir / "model", arms=arms, assignment=search / "assignment.parquet",
                           candidates=_existing(search / "candidates.parquet"),
                           report=_existing(run_dir / "report.html"), held_out=held_out)


def read_optimize(out: str | Path, model: str | Path, table: pa.Table, cfg: VerifyConfig) -> Recommendations:
    """The recommendations of a `cpo optimize` folder (``model``: the bundle it used)."""
    out = Path(out)
    best = _folder_json(out / "best_static_prompt.json", "`cpo optimize` output")
    incumbent = cfg.incumbent or best.get("incumbent", best["pool_static"])["prompt_id"]
    arms = _arms(table, incumbent, best["pool_static"]["prompt_id"], out / "candidates.parquet", cfg,
                 str(out / "best_static_prompt.json"))
    return Recommendations(model=Path(model), arms=arms, assignment=out / "assignment.parquet",
                           candidates=_existing(out / "candidates.parquet"))


def _folder_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path.parent} is not a {what} folder: {path} is missing")
    return json.loads(path.read_text())


def _existing(path: Path) -> Path | None:
    return path if path.is_file() else None


def _arms(table: pa.Table, incumbent: str, static: str, candidates: Path, cfg: VerifyConfig, source: str) -> list[Arm]:
    """:func:`pick_arms` for prompt ids named by a run's outputs (checked against the table)."""
    ids, texts = _pool(table)
    index = {p: i for i, p in enumerate(ids)}
    missing = [p for p in (incumbent, static) if p not in index]
    if missing:
        raise DataError(f"the recommendations name prompt(s) {missing} the data does not hold", source=source,
                        fix="verify with the table the folder was made from (its manifest or inputs.json names it)")
    searched = pq.read_table(candidates) if candidates.is_file() else None
    return pick_arms(ids, texts, index[incumbent], index[static], searched, cfg)


def _pool(table: pa.Table) -> tuple[list[str], list[str]]:
    """The table's prompts (ids and texts, first-seen order)."""
    ids = table.column("prompt_id").cast(pa.string()).to_pylist()
    texts = table.column("prompt_text").to_pylist()
    first = dict(zip(reversed(ids), reversed(texts)))
    order = list(dict.fromkeys(ids))
    return order, [first[i] for i in order]


# ------------------------------------------------------------------------------------- queries


def sample_queries(table: pa.Table, cfg: VerifyConfig, only: Sequence[str] | None = None,
                   source: str = "data") -> pa.Table:
    """Up to ``cfg.max_queries`` distinct queries with a gold answer (``query_id, query_text,
    gold_answer``), drawn with ``cfg.seed``; ``only`` restricts them to these ids (a held-out split)."""
    need = [c for c in ("query_id", "query_text", cfg.gold_column) if c not in table.column_names]
    if need:
        raise DataError(f"verification needs queries with gold answers; the table lacks {need}", source=source,
                        column=need[0], fix="pass --verify-queries with query_id, query_text and "
                                            f"{cfg.gold_column} (or set verify.gold_column)")
    ids = table.column("query_id").cast(pa.string()).to_pylist()
    texts, golds = table.column("query_text").to_pylist(), table.column(cfg.gold_column).to_pylist()
    allowed = set(only) if only is not None else None
    first: dict[str, tuple[str, Any]] = {}
    for q, t, g in zip(ids, texts, golds):
        if g is not None and (allowed is None or q in allowed) and not (isinstance(g, float) and math.isnan(g)):
            first.setdefault(q, (t, g))
    if len(first) < 2:
        raise DataError(f"only {len(first)} held-out queries with a gold answer to verify on", source=source,
                        column=cfg.gold_column, fix="pass --verify-queries with more queries")
    keys = sorted(first)
    pick = np.sort(np.random.default_rng(cfg.seed).permutation(len(keys))[:cfg.max_queries])
    chosen = [keys[i] for i in pick]
    return pa.table({"query_id": chosen, "query_text": [first[q][0] for q in chosen],
                     "gold_answer": [_gold(first[q][1]) for q in chosen]})


def _gold(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def read_queries(path: str | Path) -> pa.Table:
    from cpo_engine.data import read_table

    return read_table(path)


# ----------------------------------------------------------------------------------- LLM runs


def run_arms(queries: pa.Table, arms: Sequence[Arm], llm: LLMConfig, cfg: VerifyConfig, out: Path,
             backend: Backend | None = None, echo: Callable[[str], None] = print) -> tuple[pa.Table, dict[str, Any]]:
    """Every arm on every query (``cfg.samples`` each) through the generation store under
    ``out/llm/<digest>`` (resumed when the same queries and prompts ran before); returns the
    error-free rows and the generation summary."""
    from cpo_engine.generation import generate_triplets, read_generated

    prompts = pa.table({"prompt_id": [a.id for a in arms], "prompt_text": [a.text for a in arms]})
    digest = sha256_text(json.dumps([queries.column("query_id").to_pylist(), [a.text for a in arms]]))[:12]
    folder = out / "llm" / digest
    q_path = atomic_write_parquet(queries, folder / "queries.parquet")
    p_path = atomic_write_parquet(prompts, folder / "prompts.parquet")
    gen = generate_config(llm, q_path, p_path, folder / "store", "verify", cfg)
    summary = generate_triplets(gen, backend=backend, echo=echo)
    rows = read_generated(folder / "store")
    return rows, summary.to_dict() | {"store": str(folder / "store"), "errors_total": int(
        rows.num_rows - rows.column("error").null_count)}


def generate_config(llm: LLMConfig, queries: Path, prompts: Path, store: Path, run_id: str, budget: VerifyConfig) -> Any:
    """A full-grid `cpo generate` config: every prompt on every query, ``budget.samples`` each, at most
    ``budget.max_tokens`` tokens, with the LLM section's backend, template and grader."""
    from cpo_engine.generation import DesignConfig, GenerateConfig, SamplingConfig

    return GenerateConfig(queries=str(queries), prompts=str(prompts), out=str(store), run_id=run_id,
                          gold_column="gold_answer", grader=llm.grader, executor=llm.executor, retry_errors=True,
                          shard_size=llm.shard_size, backend=llm.backend, template=llm.template, ray=llm.ray,
                          sampling=SamplingConfig(temperature=llm.temperature, max_tokens=budget.max_tokens,
                                                  seed=budget.seed),
                          design=DesignConfig(kind="full_grid", samples_per_cell=budget.samples, seed=budget.seed))


def measured_matrix(rows: pa.Table, query_ids: Sequence[str], arm_ids: Sequence[str]) -> np.ndarray:
    """(n_queries, n_arms) mean score over a cell's error-free samples; NaN where none succeeded."""
    from cpo_engine.search import outcome_matrix

    ok = rows.filter(pc.is_null(rows.column("error")))
    return outcome_matrix(ok, list(query_ids), list(arm_ids))


# -------------------------------------------------------------------------------- predictions


@dataclass
class Predictions:
    """The model's view of the arms on the verification queries, measured from the baseline arm."""

    effect: np.ndarray
    """(n_queries, n_arms) predicted effect vs the baseline."""
    se: np.ndarray
    static_effect: np.ndarray
    """(n_arms,) predicted uplift over the baseline averaged over the queries."""
    static_se: np.ndarray
    choice: np.ndarray
    """Per-query policy: the arm chosen by :func:`~cpo_engine.search.select.select_per_query` (the best lower
    confidence bound; the baseline unless one is confidently better)."""
    new_prompt_error: Any = None
    """The bundle's :class:`~cpo_engine.causal.new_prompt_error.NewPromptError` (policy.json), or None: the
    intervals of searched prompts add it."""


def predict(model: str | Path, query_texts: Sequence[str], arms: Sequence[Arm], selection: SelectionConfig | None = None,
            embed: EmbedConfig | None = None, representer: Representer | None = None) -> Predictions:
    """Score the arms for the queries with a model bundle, effects referenced to ``arms[0]``; the per-query
    policy routes by the run's selection rule (``selection``: its z and simultaneous multiplier; default
    :class:`SelectionConfig`)."""
    from cpo_engine.embedding import text_embedder
    from cpo_engine.search import CandidateScorer, select_per_query
    from cpo_engine.search.scoring import selection_multiplier
    from cpo_engine.policy.bundle import ModelBundle
    from cpo_engine.workflows.common import Representer

    selection = selection or SelectionConfig()
    bundle = ModelBundle.load(model)
    rep = representer or Representer(bundle.embed_config(embed))
    info = bundle.info
    X = text_embedder(rep.encoder, rep.cache, bundle.query_pca, info.get("query_prefix") or "")(list(query_texts))
    T = text_embedder(rep.encoder, rep.cache, bundle.prompt_pca, info.get("prompt_prefix") or "")([a.text for a in arms])
    head = bundle.model.linear_head().with_reference(T[0])
    z = selection_multiplier(selection.z, head.d_t, selection.simultaneous)
    # the full fit, not the split halves, and no trust region: verification itself is the out-of-sample check of
    # the arms, which were chosen already
    scorer = CandidateScorer(head, X, lambda t: None, trust_region=None, z=z, device="cpu", split=False)
    eff, se = scorer.per_query(T)
    s_eff, s_se = head.static_effect(X, T)
    return Predictions(effect=eff, se=se, static_effect=np.asarray(s_eff), static_se=np.asarray(s_se),
                       choice=select_per_query(eff, se, z, incumbent=0)[0],
                       new_prompt_error=bundle_new_prompt_error(bundle.path))


def bundle_new_prompt_error(folder: Path) -> Any:
    """The prompt-level error a bundle's policy.json records (None: none recorded, or no policy.json)."""
    from cpo_engine.causal.new_prompt_error import NewPromptError
    from cpo_engine.policy.policy import PolicyState

    try:
        evidence = PolicyState.load(folder).evidence
    except ConfigError:
        return None
    return NewPromptError.from_dict(evidence.get("new_prompt_error"))


# ---------------------------------------------------------------------------------- statistics
# labelled, calibration, verdict, promotable: cpo_engine.causal.verification


def summarize(arms: Sequence[Arm], Y: np.ndarray, pred: Predictions, method: str,
              baseline_route: np.ndarray | None = None) -> dict[str, Any]:
    """Per arm: measured value and uplift over the baseline with intervals, predicted uplift; the
    per-query policy's measured value and uplift; the calibration.

    The baseline is arm 0, or with ``baseline_route`` (an arm index per query) a per-query policy
    (the live one in `cpo nightly`): its outcome on query q is ``Y[q, baseline_route[q]]``.
    """
    n = Y.shape[0]
    q = np.arange(n)
    b = np.zeros(n, dtype=np.int64) if baseline_route is None else np.asarray(baseline_route, dtype=np.int64)
    base, base_eff = Y[q, b], pred.effect[q, b]
    rows, p_vals, p_ses, m_vals, coef_ses, m_ses = [], [], [], [], [], []
    widened = False
    span = _uplift_span(Y)
    for j, arm in enumerate(arms):
        is_base = baseline_route is None and j == 0
        up = None if is_base else labelled(Y[:, j], base, MEASURED, method)
        if baseline_route is None:
            p_val, p_se = float(pred.static_effect[j]), float(pred.static_se[j])
        else:  # vs a routed baseline: the mean per-query difference (no interval)
            p_val, p_se = float(np.mean(pred.effect[:, j] - base_eff)), float("nan")
        lo, hi = _lo(p_val, p_se), _hi(p_val, p_se)
        p_method, coef_se = "causal model", p_se
        npe = pred.new_prompt_error
        if npe is not None and arm.role == "searched" and baseline_route is None and math.isfinite(p_se):
            lo, hi = (float(v) for v in npe.interval(p_val, p_se))  # never logged: + the prompt-level error
            p_se, p_method = (hi - lo) / (2 * Z95), npe.method
            widened = True
        if abs(p_val) > span:  # beyond what an uplift can be: the model extrapolated, and its interval says nothing
            p_val, lo, hi = float(np.clip(p_val, -span, span)), -span, span
        p_up = LabelledValue(p_val, None if lo is None else max(lo, -span), None if hi is None else min(hi, span),
                             PREDICTED, p_method)
        rows.append({"id": arm.id, "text": arm.text, "role": arm.role, "status": VERIFIED,
                     "value": _d(labelled(Y[:, j], None, MEASURED, method)), "uplift_vs_baseline": _d(up),
                     "predicted_uplift": None if is_base else p_up.to_dict(),
                     "verdict": "baseline" if is_base else verdict(up)})
        if not is_base:
            p_vals.append(p_val)
            p_ses.append(p_se)
            coef_ses.append(coef_se)
            m_vals.append(up.value if up else np.nan)
            m_ses.append((up.ci_high - up.ci_low) / (2 * Z95) if up and up.ci_low is not None and up.ci_high is not None
                         else np.nan)
    routed = Y[q, pred.choice]
    pol_up = labelled(routed, base, MEASURED, method)
    policy = {"value": _d(labelled(routed, None, MEASURED, method)), "uplift_vs_baseline": _d(pol_up),
              "predicted_uplift": LabelledValue(float(np.mean(pred.effect[q, pred.choice] - base_eff)), None, None,
                                                PREDICTED, "causal model, mean over queries").to_dict(),
              "share_not_baseline": float(np.mean(pred.choice != b)),
              "prompts_used": {arms[j].id: int(c) for j, c in enumerate(np.bincount(pred.choice, minlength=len(arms)))
                               if c}, "verdict": verdict(pol_up), "status": VERIFIED}
    cal = calibration(np.array(p_vals), np.array(p_ses), np.array(m_vals), np.array(m_ses, dtype=float))
    if widened:  # searched prompts' intervals include the prompt-level error: the old ones beside them
        cal["interval_coverage_coefficient_only"] = calibration(np.array(p_vals), np.array(coef_ses),
                                                                np.array(m_vals))["interval_coverage"]
    return {"arms": rows, "policy": policy, "calibration": cal, "headline": headline(arms, Y, method)}


def _uplift_span(Y: np.ndarray) -> float:
    """The largest uplift the score scale allows: max - min of the measured scores, and at least 1 when they lie
    in [0, 1] (a 0/1 or fractional grade)."""
    finite = np.asarray(Y, dtype=np.float64)[np.isfinite(Y)]
    if finite.size == 0:
        return float("inf")
    lo, hi = float(finite.min()), float(finite.max())
    if 0.0 <= lo and hi <= 1.0:
        lo, hi = 0.0, 1.0
    return hi - lo if hi > lo else float("inf")


def _lo(v: float, se: float) -> float | None:
    return v - Z95 * se if math.isfinite(se) else None


def _hi(v: float, se: float) -> float | None:
    return v + Z95 * se if math.isfinite(se) else None


def headline(arms: Sequence[Arm], Y: np.ndarray, method: str) -> dict[str, Any] | None:
    """The top searched prompt against the logged prompts, measured on the same queries: against the
    best static logged prompt (what one picks without a model: the best training mean), and against
    the logged prompt that scored best here (chosen after seeing these outcomes: favours the logged)."""
    s = next((j for j, a in enumerate(arms) if a.role == "searched"), None)
    if s is None:
        return None
    static = next((j for j, a in enumerate(arms) if a.role == "best_static"), 0)
    logged = [j for j, a in enumerate(arms) if a.role != "searched"]
    with np.errstate(all="ignore"):
        best = max(logged, key=lambda j: float(np.nan_to_num(np.nanmean(Y[:, j]), nan=-np.inf)), default=static)
    return {"searched": asdict(arms[s]),
            "vs_best_static": {"against": asdict(arms[static]), "uplift": _d(labelled(Y[:, s], Y[:, static], MEASURED,
                                                                                     method))},
            "vs_best_measured_logged": {"against": asdict(arms[best]),
                                        "uplift": _d(labelled(Y[:, s], Y[:, best], MEASURED, method))}}


def _d(v: LabelledValue | None) -> dict[str, Any] | None:
    return None if v is None else v.to_dict()


def best_arm(report: dict[str, Any], margin: float) -> dict[str, Any] | None:
    """The promotable challenger (a prompt or the policy) with the largest measured uplift, or None."""
    cands = [a | {"kind": "static"} for a in report["arms"] if a["verdict"] != "baseline"]
    cands.append(report["policy"] | {"kind": "per_query", "id": "per-query policy"})
    ok = [c for c in cands if promotable(_lv(c["uplift_vs_baseline"]), margin)]
    return max(ok, key=lambda c: c["uplift_vs_baseline"]["value"]) if ok else None


def _lv(d: dict[str, Any] | None) -> LabelledValue | None:
    if d is None:
        return None
    return LabelledValue(d["value"], d["ci_low"], d["ci_high"], d["evidence"], d.get("method", ""), d.get("n"))


# ------------------------------------------------------------------------------------- the stage


def verify(arms: Sequence[Arm], model: str | Path, queries: pa.Table, llm: LLMConfig, cfg: VerifyConfig,
           out: str | Path, *, selection: SelectionConfig | None = None, embed: EmbedConfig | None = None,
           representer: Representer | None = None,
           backend: Backend | None = None, echo: Callable[[str], None] = print,
           baseline: tuple[dict[str, Any], Callable[[Sequence[str]], np.ndarray]] | None = None) -> VerifyResult:
    """Run ``arms`` (baseline first) on ``queries`` with the LLM, measure, compare with the model's
    predictions, and write ``verification.json``/``.md`` and ``verified_triplets.parquet`` in ``out``.

    Parameters
    ----------
    arms : sequence of Arm
        The prompts; ``arms[0]`` is the baseline every uplift is measured from.
    model : path
        The model bundle whose predictions are checked (and which routes the per-query policy).
    queries : pyarrow.Table
        ``query_id, query_text, gold_answer`` (:func:`sample_queries`).
    llm, cfg : LLMConfig, VerifyConfig
        The backend, template and grader; the budget.
    selection : SelectionConfig, optional
        The run's selection rule (``selection.z``, ``selection.simultaneous``), by which the per-query policy
        routes among the arms; default :class:`SelectionConfig`.
    baseline : (description, route), optional
        A per-query baseline instead of ``arms[0]``: ``route(query_texts)`` gives each query's arm
        index (`cpo nightly`: the live per-query policy), ``description`` names it in the report.
    backend : Backend, optional
        A ready backend instead of building one from ``llm.backend``.
    """
    out = Path(out)
    arms = list(arms)
    if len(arms) < 2:
        raise ConfigError("verification needs a baseline and at least one other prompt; raise verify.top_k or "
                          "set verify.seeds=all")
    echo(f"verify: at most {queries.num_rows * len(arms) * cfg.samples} LLM calls ({queries.num_rows} held-out "
         f"queries x {len(arms)} prompts x {cfg.samples} sample(s), at most {cfg.max_tokens} tokens each), before the "
         "first call")
    from cpo_engine.utils import LEDGER

    seq = None
    with LEDGER.stage("verify"):
        if cfg.design == "sequential" and baseline is None:  # candidates stop once decided: verify_sequential
            from cpo_engine.workflows.verify_sequential import run_sequential

            rows, gen, seq = run_sequential(queries, arms, cfg, lambda q, a: run_arms(
                q, a, llm, cfg, out, backend=backend, echo=echo), measured_matrix, echo)
        else:
            rows, gen = run_arms(queries, arms, llm, cfg, out, backend=backend, echo=echo)
    check_measured(rows, gen)
    qids = queries.column("query_id").to_pylist()
    Y = measured_matrix(rows, qids, [a.id for a in arms])
    pred = predict(model, queries.column("query_text").to_pylist(), arms, selection, embed, representer)
    method = (f"LLM run: {llm.backend.kind} '{llm.backend.model}', {len(qids)} held-out queries x {cfg.samples} "
              f"sample(s), max {cfg.max_tokens} tokens, grader {llm.grader}")
    route = None if baseline is None else np.asarray(baseline[1](queries.column("query_text").to_pylist()))
    report = {"format": FORMAT, "baseline": asdict(arms[0]) if baseline is None else baseline[0],
              **summarize(arms, Y, pred, method, route),
              "budget": {"queries": len(qids), "samples": cfg.samples, "max_tokens": cfg.max_tokens,
                         "prompts": len(arms), "calls": len(qids) * len(arms) * cfg.samples},
              "generation": gen, "config": {"verify": asdict(cfg), "generation": asdict(llm)},
              "labels": {"measured": MEASURED, "predicted": PREDICTED}}
    report["best_promotable"] = best_arm(report, cfg.margin)
    if seq is not None:  # promotion by the sequential rule (its level holds over every look and candidate)
        from cpo_engine.workflows.verify_sequential import best_sequential

        report["sequential"] = seq
        report["budget"].update(calls=seq["calls"], queries=seq["queries_used"])
        report["best_promotable"] = best_sequential(report)
        decided = {c["id"]: {"undecided": "tie"}.get(c["decision"], c["decision"]) for c in seq["candidates"]}
        for a in report["arms"]:  # the verdict is the CS's: a fixed-n interval is not valid after early stopping
            a["verdict"] = decided.get(a["id"], a["verdict"])
    atomic_write_json(out / "verification.json", report)
    atomic_write_text(out / "verification.md", render_markdown(report))
    verified = verified_triplets(rows)
    atomic_write_parquet(verified, out / "verified_triplets.parquet")
    if cfg.append_to:
        atomic_write_parquet(verified, Path(cfg.append_to) / f"verified-{Path(gen['store']).parent.name}.parquet")
    write_manifest(out, "verify", {"verify": asdict(cfg), "generation": asdict(llm)},
                   {"verification": out / "verification.json", "markdown": out / "verification.md",
                    "verified_triplets": out / "verified_triplets.parquet", "generation": gen["store"]},
                   budget=report["budget"])
    return VerifyResult(out, report, arms, Y, pred.choice)


def check_measured(rows: pa.Table, gen: dict[str, Any]) -> None:
    """Refuse to call anything measured when no LLM call succeeded, or every answer was empty: a rerun of a
    failed verification used to mark every row verified with a measured uplift of 0.0."""
    from cpo_engine.exceptions import BackendError

    ok = rows.filter(pc.is_null(rows.column("error")))
    store = gen.get("store", "the generation store")
    if ok.num_rows == 0:
        first = next((e for e in rows.column("error").to_pylist() if e), None)
        raise BackendError(f"no LLM call of this verification succeeded ({rows.num_rows} failed; first error: {first}): "
                           f"nothing was measured, nothing is marked verified\n  fix: check the server, then rerun "
                           f"the same command (failed calls are retried; the store is {store})")
    answers = ok.column("raw_answer").to_pylist() if "raw_answer" in ok.column_names else None
    if answers is not None and not any(a and str(a).strip() for a in answers):
        raise BackendError(f"every one of the {ok.num_rows} LLM answers of this verification is empty: nothing was "
                           "measured, nothing is marked verified\n  fix: check the model, its chat template and "
                           "max_tokens (verify.max_tokens), then rerun")


def verified_triplets(rows: pa.Table) -> pa.Table:
    """The error-free LLM rows in the triplet contract (plus gold answer, model and run id)."""
    ok = rows.filter(pc.is_null(rows.column("error")))
    keep = ["query_id", "query_text", "prompt_id", "prompt_text", "score", "sample", "task", "model", "run_id",
            "gold_answer"]
    return ok.select([c for c in keep if c in ok.column_names])


# ------------------------------------------------------------------------- marking a run's outputs


def mark_table(path: Path, result: VerifyResult, pairs: Sequence[tuple[str, str]]) -> Path | None:
    """Add ``<prefix>verification`` ('verified' / 'predicted only') and ``<prefix>measured_uplift``
    columns to a Parquet file, for each (id column, prefix) pair present; existing ones are replaced."""
    if not path or not path.is_file():
        return None
    t = pq.read_table(path)
    uplift = {a["id"]: (a["uplift_vs_baseline"] or {}).get("value") for a in result.report["arms"]}
    uplift[result.arms[0].id] = 0.0
    for col, prefix in pairs:
        if col not in t.column_names:
            continue
        ids = t.column(col).to_pylist()
        for name, values in ((f"{prefix}verification", [VERIFIED if i in uplift else PREDICTED_ONLY for i in ids]),
                             (f"{prefix}measured_uplift", [uplift.get(i) for i in ids])):
            if name in t.column_names:
                t = t.drop_columns([name])
            t = t.append_column(name, pa.array(values, pa.string() if name.endswith("verification") else pa.float64()))
    return atomic_write_parquet(t, path)


def mark_report(path: Path | None, report: dict[str, Any]) -> None:
    """Add the verification section to a run's report (``path``: its ``report.html``) through the report
    module: the page is rendered again from its sections, this stage's earlier section replaced."""
    from cpo_engine.report import add_section

    if path is None or not path.is_file():
        return
    if add_section(path.parent, report_section(report)) is None:
        log.warning("%s was written before reports kept their sections (%s): the verification is in %s, not on "
                    "the page; rerun `cpo run` to get a page with it", path, "report_sections.json",
                    path.parent / "verify" / "verification.md")


def _fmt(v: dict[str, Any] | None, signed: bool = True) -> str:
    if not v:
        return "-"
    sign = "+" if signed else ""
    ci = "" if v.get("ci_low") is None else f" ({v['ci_low']:{sign}.3f} to {v['ci_high']:{sign}.3f})"
    from cpo_engine.causal.new_prompt_error import LABEL

    extra = ", incl. prompt-level error" if v.get("method") == LABEL else ""  # a never-logged prompt's wider interval
    return f"{v['value']:{sign}.3f}{ci} [{v['kind']}{extra}]"


def _rows(report: dict[str, Any]) -> list[list[str]]:
    out = []
    for a in report["arms"]:
        out.append([a["role"], a["id"], a["text"], _fmt(a["value"], False), _fmt(a["uplift_vs_baseline"]),
                    _fmt(a["predicted_uplift"]), a["verdict"]])
    p = report["policy"]
    out.append(["policy", "per-query policy", f"{p['share_not_baseline']:.0%} of queries leave the baseline",
                _fmt(p["value"], False), _fmt(p["uplift_vs_baseline"]), _fmt(p["predicted_uplift"]), p["verdict"]])
    return out


HEADER = ["role", "id", "prompt", "measured value", "measured uplift vs baseline", "predicted uplift", "verdict"]


def calibration_line(report: dict[str, Any]) -> str:
    c = report["calibration"]
    if not c.get("n_prompts"):
        return "Calibration: no prompt besides the baseline was measured."
    rank = ("n/a (fewer than 3 prompts or no spread)" if c["spearman"] is None
            else f"Spearman {c['spearman']:+.2f}, Kendall tau {c['kendall_tau']:+.2f}")
    line = (f"Calibration of the reward model on these {c['n_prompts']} prompts: rank correlation of predicted "
            f"and measured uplift {rank}; mean absolute error {c['mean_abs_error']:.3f}; mean predicted "
            f"{c['mean_predicted']:+.3f} vs measured {c['mean_measured']:+.3f}")
    if c["interval_coverage"] is not None:
        line += f"; the predicted 95% interval covered the measured uplift for {c['interval_coverage']:.0%} of prompts"
        if c.get("interval_coverage_coefficient_only") is not None:
            line += (" (searched prompts' intervals include the prompt-level error; without it "
                     f"{c['interval_coverage_coefficient_only']:.0%})")
        if c.get("interval_coverage_with_measurement_error") is not None:
            line += ("; allowing for the measured uplift's own error (95% when the intervals are exact): "
                     f"{c['interval_coverage_with_measurement_error']:.0%}")
    return line + "."


def render_markdown(report: dict[str, Any]) -> str:
    """verification.md: the table of measured and predicted numbers, each labelled."""
    b = report["budget"]
    lines = ["# Verification with the LLM", "",
             f"Baseline: `{report['baseline']['id']}` ({report['baseline']['role']}): {report['baseline']['text']!r}. "
             f"{b['queries']} held-out queries x {b['prompts']} prompts x {b['samples']} sample(s), "
             f"max {b['max_tokens']} tokens ({b['calls']} calls). Intervals are 95%, paired by query.", "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in r) + " |" for r in _rows(report)]
    lines += ["", calibration_line(report), "", f"Labels: {report['labels']['measured']}; "
              f"{report['labels']['predicted']}.", ""]
    if report.get("sequential"):
        from cpo_engine.workflows.verify_sequential import sequential_lines

        lines += sequential_lines(report["sequential"]) + [""]
    return "\n".join(lines)


def report_section(report: dict[str, Any]) -> Any:
    """The verification's section of the run report (a :class:`cpo_engine.report.Section`, keyed
    'verification': verifying again replaces it)."""
    from cpo_engine.report import Column, Table, table_section

    keys = ["role", "id", "text", "value", "uplift", "predicted", "verdict"]
    kinds = ["text", "code", "text", "range", "range", "range", "text"]
    table = Table([Column(k, h, kind) for k, h, kind in zip(keys, HEADER, kinds)],
                  [dict(zip(keys, r)) for r in _rows(report)])
    b = report["budget"]
    intro = (f"{b['queries']} held-out queries x {b['prompts']} prompts x {b['samples']} sample(s); baseline "
             f"'{report['baseline']['id']}'; 95% intervals paired by query.")
    return table_section("verification", "Verification with the LLM", table, intro, [calibration_line(report)])


def print_verification(report: dict[str, Any]) -> None:
    """Console summary of a verification."""
    print(f"verification on {report['budget']['queries']} held-out queries (baseline "
          f"{report['baseline']['id']!r}):")
    for r in _rows(report):
        print(f"  {r[0]:<11} {r[1][:16]:<16} value {r[3]:<36} uplift {r[4]:<44} predicted {r[5]}  -> {r[6]}")
    print("  " + calibration_line(report))


# ------------------------------------------------------------------------------ `cpo run` folders


def verify_run(run_dir: str | Path, cfg: VerifyConfig, llm: LLMConfig, table: pa.Table, *,
               selection: SelectionConfig | None = None,
               embed: EmbedConfig | None = None, representer: Representer | None = None,
               backend: Backend | None = None) -> VerifyResult:
    """The verify stage of a `cpo run` folder: its recommendations on its held-out queries (or
    ``cfg.queries``), then the marks on its assignment, candidates and report."""
    run_dir = Path(run_dir)
    rec = read_run(run_dir, table, cfg)
    if cfg.queries:
        queries = sample_queries(read_queries(cfg.queries), cfg, source=cfg.queries)
    else:
        queries = sample_queries(table, cfg, only=rec.held_out, source="the run's held-out queries")
    result = verify(rec.arms, rec.model, queries, llm, cfg, run_dir / "verify", selection=selection,
                    embed=embed, representer=representer, backend=backend)
    mark_outputs(rec, result)
    return result


def mark_outputs(rec: Recommendations, result: VerifyResult) -> None:
    """Mark the assignment, candidates and report of the recommendations with what was verified."""
    mark_table(rec.assignment, result, [("recommended_prompt_id", "recommended_"), ("search_candidate_id", "search_")])
    if rec.candidates is not None:
        mark_table(rec.candidates, result, [("id", "")])
    mark_report(rec.report, result.report)


def verify_optimize(out: str | Path, cfg: OptimizeConfig, table: pa.Table, representer: Representer | None = None,
                    backend: Backend | None = None) -> VerifyResult:
    """The verify stage of `cpo optimize` (``cfg``: its OptimizeConfig): its recommendations on
    ``cfg.verify.queries`` (default: the table's own queries), then the marks on its outputs."""
    out = Path(out)
    rec = read_optimize(out, cfg.model, table, cfg.verify)
    source = cfg.verify.queries or "the optimized table"
    queries = sample_queries(read_queries(cfg.verify.queries) if cfg.verify.queries else table, cfg.verify,
                             source=source)
    result = verify(rec.arms, rec.model, queries, cfg.generation, cfg.verify, out / "verify",
                    selection=cfg.selection, embed=cfg.embed, representer=representer, backend=backend)
    mark_outputs(rec, result)
    return result


def verify_job(cfg: VerifyJobConfig, backend: Backend | None = None) -> VerifyResult:
    """`cpo verify` (``cfg``: a VerifyJobConfig): verify a `cpo run` or `cpo optimize` folder."""
    from cpo_engine.data.config import DataConfig
    from cpo_engine.workflows.common import load_data

    from cpo_engine.workflows.tracking import check_tracking, log_folder

    if not cfg.run:
        raise ConfigError("verify needs the folder to verify: pass RUN (a `cpo run` or `cpo optimize` output folder)")
    check_tracking(cfg.tracking)  # --mlflow without the mlflow extra: before any LLM call
    from cpo_engine.data.storage import is_remote

    if is_remote(cfg.run):
        return _verify_remote(cfg, backend)
    folder = Path(cfg.run)
    kind = read_kind(folder)
    if kind not in ("run", "optimize"):
        what = (f"a `cpo {kind}` folder (its {MANIFEST} says kind '{kind}')" if kind else
                f"not a cpo output folder (no readable {MANIFEST}; folders written before manifests named their kind "
                "count as none)")
        raise ConfigError(f"{folder} is {what}: verify takes the folder of a `cpo run` or a `cpo optimize`\n"
                          "  fix: pass such a folder (rerun the command that wrote it with this version if it has no "
                          "manifest)")
    if kind == "run":
        manifest = json.loads((folder / MANIFEST).read_text())
        data = cfg.data if cfg.data.path else DataConfig(path=manifest["data"]["path"],
                                                           tasks=manifest["config"]["data"].get("tasks"))
        table, _ = load_data(data)
        if cfg.model:
            raise ConfigError("--model is for `cpo optimize` folders; a `cpo run` folder is verified with its own model")
        result = verify_run(folder, cfg.verify, cfg.generation, table, selection=cfg.selection, embed=cfg.embed,
                            backend=backend)
        log_folder(cfg.tracking, folder, "verify")
        return result
    recorded = _folder_json(folder / "inputs.json", "`cpo optimize` output")
    data = cfg.data if cfg.data.path else DataConfig(path=recorded["data"], tasks=recorded.get("tasks"))
    table, _ = load_data(data)
    result = verify_optimize(folder, replace(cfg, model=cfg.model or recorded["model"]), table, backend=backend)
    log_folder(cfg.tracking, folder, "verify")
    return result


def _verify_remote(cfg: VerifyJobConfig, backend: Backend | None) -> VerifyResult:
    """`cpo verify s3://...`: the run folder is copied to a fresh local folder, verified there, and uploaded back
    (:func:`cpo_engine.data.storage.upload_folder`: every file, then the manifest last, so a reader that finds the
    manifest finds the verification it lists); a verification that fails uploads nothing."""
    import shutil
    import tempfile

    from cpo_engine.data.storage import download, location, path_type, upload_folder

    uri = str(cfg.run).rstrip("/")
    fs, inner = location(uri)
    if path_type(f"{uri}/{MANIFEST}") != "file":  # an unreachable store: a DataError naming the URI and the fix
        raise ConfigError(f"--run {uri}: no {MANIFEST} there, so it is not a cpo output folder\n  fix: pass the URI "
                          "of a `cpo run` or `cpo optimize` output folder")
    local = Path(tempfile.mkdtemp(prefix="cpo_verify_"))
    try:
        download(fs, inner, local)
        result = verify_job(replace(cfg, run=str(local)), backend)
        upload_folder(local, uri)
    finally:
        shutil.rmtree(local, ignore_errors=True)
    return result


__all__ = ["Arm", "Recommendations", "VerifyResult", "Predictions", "pick_arms", "read_run", "read_optimize",
           "sample_queries", "run_arms", "generate_config", "measured_matrix", "predict", "summarize", "calibration", "verdict",
           "promotable", "best_arm", "verify", "verify_run", "verify_optimize", "verify_job", "mark_outputs", "mark_table", "mark_report",
           "verified_triplets", "render_markdown", "report_section", "print_verification", "VERIFIED", "PREDICTED_ONLY"]
