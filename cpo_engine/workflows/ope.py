"""Policy values for `cpo run`, `cpo optimize` and `cpo ope`: measured on held-out outcomes where every
cell is observed, else estimated off-policy from the logs (:mod:`cpo_engine.causal.policy_values`).

- :func:`held_out_policy_values` (`cpo run`): the held-out queries' rows; propensities from the
  table's ``propensity`` column, else from a propensity model cross-fitted on the training logs with
  the DML fit's folds; the reward model is the causal model fitted on the training queries.
- :func:`table_policy_values` (`cpo optimize`): the table's own rows with a saved model.
- :func:`run_ope` (`cpo ope`): logs + policies (assignment files or prompt ids) -> value table, with a
  reward model cross-fitted on the logs (or a saved one).
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cpo_engine.causal.ope import BanditLogs, OPEConfig, OverlapWarning, causal_q_hat, logged_propensity
from cpo_engine.causal.policy_values import PolicyValues, estimated_policy_values, logged_means, measured_policy_values
from cpo_engine.data.grid import cell_means
from cpo_engine.exceptions import ConfigError, DataError
from cpo_engine.workflows.common import scores_and_weights

if TYPE_CHECKING:
    from cpo_engine.workflows.run_types import Logs
    from cpo_engine.policy.bundle import ModelBundle
    from cpo_engine.policy.policy import PolicyState
    from cpo_engine.settings import OffPolicyConfig, OptimizeConfig, RunConfig
    from cpo_engine.causal.dml import CausalRewardModel
    from cpo_engine.embedding.representations import Representations

log = logging.getLogger(__name__)


@dataclass
class HeldOut:
    """The rows of a set of queries, re-indexed 0..n_queries-1 (``q``) in the order of ``queries``."""

    queries: np.ndarray
    rows: np.ndarray
    q: np.ndarray
    a: np.ndarray
    y: np.ndarray


def held_out_rows(table: pa.Table, reps: Representations, queries: np.ndarray) -> HeldOut:
    """The table's rows whose query is in ``queries`` (indices into ``reps.query_ids``)."""
    y, _ = scores_and_weights(table)
    pos = np.full(len(reps.query_ids), -1, dtype=np.int64)
    pos[queries] = np.arange(len(queries))
    rows = np.flatnonzero(pos[reps.row_query] >= 0)
    return HeldOut(np.asarray(queries), rows, pos[reps.row_query[rows]], reps.row_prompt[rows], y[rows])


def _features(reps: Representations, ope: OPEConfig) -> np.ndarray:
    from cpo_engine.causal.propensity import propensity_features

    return propensity_features(reps.X, reps.query_texts if ope.propensity_text_features else None)


def _propensity_diagnostics(model: Any, P: np.ndarray, prompt_ids: list[str], source: str,
                            ope: OPEConfig) -> dict[str, Any]:
    from cpo_engine.causal.propensity import overlap_by_prompt

    return {"propensity_source": source, "propensity_model": model.diagnostics(), "min_propensity": ope.min_propensity,
            "min_logged_propensity": ope.min_logged_propensity,
            "support_floor": ope.support_floor,
            "overlap_by_prompt": overlap_by_prompt(P, prompt_ids, ope.min_propensity, ope.support_floor)}


def _values(held: HeldOut, policies: dict[str, Any], static_name: str | None, q_hat: np.ndarray | None,
            P: np.ndarray, p_logged: np.ndarray | None, diagnostics: dict[str, Any], ope: OPEConfig,
            n_prompts: int, where: str) -> PolicyValues:
    """Measured values when every held-out cell is observed, else off-policy estimates."""
    Y = cell_means(held.q, held.a, held.y, len(held.queries), n_prompts)[0]
    if np.isfinite(Y).all():
        return measured_policy_values(Y, policies, logged_means(held.q, held.y, len(held.queries)), static_name,
                                      ope.level)
    note = None
    if p_logged is None:
        held, note = _rows_with_evidence(P, held, [o["prompt_id"] for o in diagnostics["overlap_by_prompt"]],
                                         diagnostics.get("untrained_prompts") or {})
    p = P[held.q, held.a] if p_logged is None else p_logged
    with _printed_warnings():
        values = estimated_policy_values(BanditLogs(held.q, held.a, held.y, p, logged=p_logged is not None), policies,
                                         q_hat, ope, P, static_name,
                                         diagnostics, where)
    if note:
        values.method += f"; {note}"
    return values


def _rows_with_evidence(P: np.ndarray, held: HeldOut, prompt_ids: list[str],
                        untrained: dict[str, int]) -> tuple[HeldOut, str | None]:
    """The logged rows whose estimated propensity ``P[q, a]`` is positive, and a note when some are not.

    A propensity of 0 means the propensity model never saw that prompt chosen (e.g. it was logged only on
    held-out queries, or in one cross-fitting fold): how often the logging policy chooses it is unknown, and 0
    is no propensity to weight a row by (it used to fail as an invalid 'propensity' column the user never
    gave). Such a prompt is off support (its cells stay below ``support_floor``: where a policy chooses it,
    the value rests on the reward model, within bounds), and its logged rows are left out of the off-policy
    estimates, which the note says; every policy is valued on the same remaining rows."""
    zero = ~(P[held.q, held.a] > 0)
    if not zero.any():
        return held, None
    ids = [str(prompt_ids[j]) for j in np.unique(held.a[zero])]
    keep = ~zero
    if not keep.any():
        raise DataError(f"no held-out row can be valued off-policy: every one was logged with prompt(s) "
                        f"{', '.join(ids)}, which the propensity model never saw chosen", column="prompt_id",
                        fix="log those prompts on training queries too, or store the logging probability of each row "
                            "in a 'propensity' column")
    why = ("were logged only on held-out queries, never on a training query" if set(ids) <= set(untrained)
           else "were never chosen in the rows the propensity model was fitted on")
    note = (f"prompt(s) {', '.join(ids)} {why}: with no evidence of how often the logging policy chooses them, they "
            f"are off support (where a policy chooses them its value rests on the reward model, within bounds) and "
            f"their {int(zero.sum())} logged row(s) on {len(np.unique(held.q[zero]))} queries are left out of these "
            "estimates")
    log.warning("off-policy values: %s; log them on training queries too (or store a propensity column) to value "
                "them", note)
    return HeldOut(held.queries, held.rows[keep], held.q[keep], held.a[keep], held.y[keep]), note


@contextmanager
def _printed_warnings() -> Iterator[None]:
    """Overlap warnings stay in the estimates, which the workflows print: do not print them twice."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OverlapWarning)
        yield


def held_out_policy_values(reps: Representations, table: pa.Table, logs: Logs, test: np.ndarray,
                           causal: CausalRewardModel,
                           policies: dict[str, Any], static_name: str | None, ope: OPEConfig,
                           seed: int = 0) -> PolicyValues:
    """`cpo run`: each policy's value on the held-out queries (``policies`` hold a prompt index, or one
    per held-out query in the order of ``test``).

    Measured when the held-out rows observe every (query, prompt) cell; else estimated off-policy
    (DR with the causal model fitted on ``logs``, the training rows).
    """
    from cpo_engine.causal.propensity import PropensityModel

    held = held_out_rows(table, reps, test)
    n_p, F = len(reps.prompt_ids), _features(reps, ope)
    model = PropensityModel(ope.propensity_model, ope.propensity_c, random_state=seed).fit(
        F[logs.q], logs.p, n_prompts=n_p, folds=causal.folds_)
    P = model.predict_proba(F[test])
    # a prompt with held-out rows but no training rows: the model has no evidence on it (its smoothing alone would
    # give it a made-up probability); off support, see _rows_with_evidence
    untrained = np.setdiff1d(np.unique(held.a), np.unique(logs.p))
    P[:, untrained] = 0.0
    p_logged = logged_propensity(table, held.rows)
    diag = _propensity_diagnostics(model, P, [str(p) for p in reps.prompt_ids],
                                   "logged (propensity column)" if p_logged is not None else
                                   "estimated (cross-fitted on the training logs, the DML folds)", ope)
    if len(untrained):
        diag["untrained_prompts"] = {str(reps.prompt_ids[j]): int((held.a == j).sum()) for j in untrained}
    q_hat = causal_q_hat(causal, reps.X[test], reps.T, (float(logs.y.min()), float(logs.y.max())))
    return _values(held, policies, static_name, q_hat, P, p_logged, diag, ope, n_p, "held-out logs")


def table_policy_values(reps: Representations, table: pa.Table, model: Any, policies: dict[str, Any],
                        static_name: str | None,
                        ope: OPEConfig, cv: int = 5, seed: int = 0) -> PolicyValues:
    """`cpo optimize`: each policy's value on the table's queries with a saved causal model (measured on
    a full grid; else DR with the saved model and propensities from the column or a model cross-fitted
    on the table's rows)."""
    from cpo_engine.causal.propensity import PropensityModel

    everyone = np.arange(len(reps.query_ids))
    held = held_out_rows(table, reps, everyone)
    n_p = len(reps.prompt_ids)
    prop = PropensityModel(ope.propensity_model, ope.propensity_c, cv=cv, random_state=seed).fit(
        _features(reps, ope)[held.q], held.a, n_prompts=n_p, groups=held.q)
    P = _per_query_oof(prop.oof_, held.q, len(everyone))
    p_logged = logged_propensity(table, held.rows)
    diag = _propensity_diagnostics(prop, P, [str(p) for p in reps.prompt_ids],
                                   "logged (propensity column)" if p_logged is not None else
                                   "estimated (cross-fitted on the table, folds by query)", ope)
    y_range = (float(held.y.min()), float(held.y.max()))
    q_hat = _saved_q_hat(model, reps, y_range)
    return _values(held, policies, static_name, q_hat, P, p_logged, diag, ope, n_p, "the table's logs")


def _per_query_oof(oof: np.ndarray, q: np.ndarray, n_queries: int) -> np.ndarray:
    """One out-of-fold propensity row per query (all rows of a query share a fold, hence a row)."""
    P = np.zeros((n_queries, oof.shape[1]))
    P[q] = oof
    return P


def _saved_q_hat(model: Any, reps: Representations, y_range: tuple[float, float]) -> np.ndarray | None:
    from cpo_engine.exceptions import NotFittedError

    try:
        return causal_q_hat(model, reps.X, reps.T, y_range)
    except NotFittedError as exc:
        log.warning("the saved model has no nuisance models (%s): off-policy values use self-normalized IPW, "
                    "without the reward model", exc)
        return None




def run_policy_values(reps: Representations, table: pa.Table, logs: Logs, test: np.ndarray, causal: CausalRewardModel,
                      test_choices: dict[str, np.ndarray], static: int, cfg: RunConfig) -> PolicyValues:
    """`cpo run`'s call: the pool choices (keys of :data:`~cpo_engine.workflows.run_types.POLICY_LABELS`, one
    prompt per held-out query) and the best static prompt, valued on the held-out queries."""
    from cpo_engine.workflows.run_types import POLICY_LABELS

    static_name = f"best static ({reps.prompt_ids[static]})"
    policies = {POLICY_LABELS.get(k, k): c for k, c in test_choices.items()} | {static_name: static}
    return held_out_policy_values(reps, table, logs, test, causal, policies, static_name, cfg.ope, cfg.seed)




def optimize_policy_values(reps: Representations, table: pa.Table, bundle: ModelBundle, state: PolicyState,
                           assignment: pa.Table, cfg: OptimizeConfig, data_info: dict[str, Any]) -> PolicyValues:
    """`cpo optimize`'s call: the per-query choice among the table's (logged) prompts and the static prompt,
    valued on the table's queries. Searched prompts no LLM ran cannot be valued from logs: when the
    assignment recommends some, the logged-prompt policy is valued instead. When the bundle was fitted
    on this very table the values are in-sample (optimistic), and the method says so."""
    from dataclasses import replace

    if not all(s == "logged" for s in assignment.column("source").to_pylist()):
        from cpo_engine.policy.policy import Policy

        assignment = Policy(bundle.model, state, replace(cfg.policy, candidates="logged"),
                            device=cfg.device).assign_features(reps.X, reps.query_ids)
    index = {str(p): j for j, p in enumerate(reps.prompt_ids)}
    choice = np.array([index[p] for p in assignment.column("recommended_prompt_id").to_pylist()], dtype=np.int64)
    static_name = f"best static ({reps.prompt_ids[state.incumbent]})"
    policies = {"per-query (logged prompts)": choice, static_name: int(state.incumbent)}
    values = table_policy_values(reps, table, bundle.model, policies, static_name, cfg.ope, seed=cfg.seed)
    fitted_on = (bundle.info.get("data") or {}).get("sha256")
    if fitted_on and fitted_on == data_info.get("sha256"):
        values = replace(values, method=values.method + "; IN-SAMPLE: the model was fitted on this table, so the "
                                                         "values are optimistic (evaluate on other queries)")
    return values


# ---------------------------------------------------------------------------------------------- cpo ope
@dataclass
class TargetPolicy:
    """A target policy over the table's queries: a prompt index (static), one per query (-1: not
    assigned), or a probability matrix; ``covered`` marks the queries it is defined (and valued) on."""

    name: str
    policy: Any
    covered: np.ndarray
    why_not: str = ""
    """Why some logged queries are not covered (the file's split filter, query ids not in the logs)."""


@dataclass
class OffPolicyResult:
    out: Path
    values: PolicyValues
    n_queries: int
    paths: dict[str, Path]
    decision: Any = None
    """The :class:`~cpo_engine.causal.ope_decision.OPEDecision` (deploy X, or keep the logging policy)."""
    coverage: str = ""
    """Which logged queries and rows the values use, and why the others were left out."""


def _check_assignment_columns(cols: set[str], spec: str) -> None:
    if "query_id" not in cols or not ({"recommended_prompt_id"} <= cols or {"prompt_id", "probability"} <= cols):
        raise DataError("an assignment needs query_id and recommended_prompt_id (deterministic), or query_id, "
                        "prompt_id and probability (stochastic)", source=spec,
                        fix="pass search/assignment.parquet of `cpo run` / `cpo optimize`, or a long table of "
                            "(query_id, prompt_id, probability)")


def check_policy_specs(specs: list[str], table: pa.Table) -> None:
    """Each ``--policy`` is a logged prompt id or a readable assignment with the needed columns: checked on the
    table and the files' schemas, before any embedding (read_policy checks the rest against the embedded logs)."""
    logged = set(str(p) for p in pc.unique(table.column("prompt_id")).to_pylist())
    for spec in specs:
        if not Path(spec).exists():
            if spec not in logged:
                raise DataError(f"policy '{spec}' is neither a file nor a logged prompt id",
                                fix="pass an assignment file (query_id, recommended_prompt_id) or one of the logged "
                                    f"prompt ids: {', '.join(sorted(logged)[:20])}")
            continue
        from cpo_engine.data.io import read_table

        _check_assignment_columns(set(read_table(spec).column_names), spec)


def read_policy(spec: str, reps: Representations, queries: str = "auto") -> TargetPolicy:
    """A policy from a `--policy` value: an assignment file or a logged prompt id."""
    prompt_index = {str(p): j for j, p in enumerate(reps.prompt_ids)}
    n_q = len(reps.query_ids)
    if not Path(spec).exists():
        if spec not in prompt_index:
            raise DataError(f"policy '{spec}' is neither a file nor a logged prompt id",
                            fix="pass an assignment file (query_id, recommended_prompt_id) or one of the logged "
                                f"prompt ids: {', '.join(list(prompt_index)[:20])}")
        return TargetPolicy(f"static ({spec})", prompt_index[spec], np.ones(n_q, dtype=bool))
    from cpo_engine.data.io import read_table

    t = read_table(spec)
    cols = set(t.column_names)
    _check_assignment_columns(cols, spec)
    n_file, why = t.num_rows, []
    if queries in ("auto", "test") and "split" in cols:
        t = t.filter(pc.equal(t["split"], "test"))
        why.append(f"only its {t.num_rows} of {n_file} rows with split == 'test' are used (--queries {queries}; "
                   "--queries all uses every row)")
    elif queries == "test":
        raise DataError("queries='test' but the assignment has no split column", source=spec, column="split",
                        fix="use --queries all")
    q_index = {str(q): i for i, q in enumerate(reps.query_ids)}
    qi = np.array([q_index.get(str(q), -1) for q in t.column("query_id").to_pylist()], dtype=np.int64)
    pcol = "recommended_prompt_id" if "recommended_prompt_id" in cols else "prompt_id"
    pids = [str(p) for p in t.column(pcol).to_pylist()]
    unknown = sorted({p for p in pids if p not in prompt_index})
    if unknown:
        raise DataError(f"the policy chooses prompts that were never logged: {unknown[:10]}; off-policy evaluation "
                        "cannot value them (no logged outcome, no overlap)", source=spec, column=pcol,
                        fix="value new prompts by running them with the LLM; here pass policies over logged prompts")
    pj = np.array([prompt_index[p] for p in pids], dtype=np.int64)
    keep = qi >= 0
    if not keep.all():
        why.append(f"{int((~keep).sum())} of its rows name query ids that are not in the logs")
    covered = np.zeros(n_q, dtype=bool)
    covered[qi[keep]] = True
    name = Path(spec).stem
    if pcol == "recommended_prompt_id":
        choice = np.full(n_q, -1, dtype=np.int64)
        choice[qi[keep]] = pj[keep]
        return TargetPolicy(name, choice, covered, "; ".join(why))
    probs = np.zeros((n_q, len(prompt_index)))
    np.add.at(probs, (qi[keep], pj[keep]), np.asarray(t.column("probability").to_numpy(zero_copy_only=False),
                                                       np.float64)[keep])
    return TargetPolicy(name, probs, covered, "; ".join(why))


def crossfit_q_hat(reps: Representations, held: HeldOut, causal_cfg: Any, folds: list, seed: int,
                   device: str) -> np.ndarray:
    """Reward-model predictions of every (query, prompt) cell, each query's from a causal model fitted on
    the other folds (DR needs a reward model that did not see the rows it corrects)."""
    n_q, n_p = len(held.queries), len(reps.prompt_ids)
    q_hat = np.full((n_q, n_p), np.nan)
    y_range = (float(held.y.min()), float(held.y.max()))
    X, T = reps.X[held.queries], reps.T
    for train, test in folds:
        model = causal_cfg.make_model(device=device, random_state=seed)
        model.fit(held.y[train], T[held.a[train]], X=X[held.q[train]], groups=held.q[train])
        qs = np.unique(held.q[test])
        q_hat[qs] = causal_q_hat(model, X[qs], T, y_range)
    return q_hat


def run_ope(cfg: OffPolicyConfig) -> OffPolicyResult:
    """`cpo ope`: value each policy on the logs (DR by default), next to the logging policy; writes
    OUT/ope.json and OUT/ope.md."""
    from cpo_engine.causal._checks import make_folds
    from cpo_engine.causal.propensity import PropensityModel
    from cpo_engine.utils import atomic_write_json, atomic_write_text, json_default_str
    from cpo_engine.workflows.common import Representer, check_cv, load_data, now, refuse_other_kind, write_manifest

    started = now()
    if not cfg.out:
        raise ConfigError("ope needs an output folder: pass --out DIR")
    from cpo_engine.data.storage import is_remote
    from cpo_engine.workflows.common import staged, usable_folder

    if is_remote(cfg.out):  # written locally, uploaded when it ends ok (manifest last)
        return staged(cfg, run_ope)

    usable_folder(cfg.out)  # a file or an unwritable --out is refused before the data are read and embedded
    refuse_other_kind(cfg.out, "ope")
    table, info = load_data(cfg.data)
    check_policy_specs(cfg.policies or [], table)  # before the embedding and the cross-fitted models
    check_cv(cfg.causal.cv, len(pc.unique(table["query_id"])), info["path"])
    bundle = None
    if cfg.model:
        from cpo_engine.policy.bundle import ModelBundle

        bundle = ModelBundle.load(cfg.model)
        # the bundle's encoder and prefixes, and its identity checked (as `cpo assign` and `cpo optimize` do):
        # another encoder behind the bundle's encoder name would embed the logs in another space
        reps = bundle.representer(cfg.embed).represent(table, query_pca=bundle.query_pca,
                                                       prompt_pca=bundle.prompt_pca)
    else:
        reps = Representer(cfg.embed).represent(table, cfg.pca)
    policies = [read_policy(s, reps, cfg.queries) for s in cfg.policies or []] or [
        TargetPolicy(f"static ({p})", j, np.ones(len(reps.query_ids), dtype=bool)) for j, p in enumerate(reps.prompt_ids)]
    every = held_out_rows(table, reps, np.arange(len(reps.query_ids)))
    folds = make_folds(cfg.causal.cv, len(every.y), every.q, cfg.seed)
    prop = PropensityModel(cfg.ope.propensity_model, cfg.ope.propensity_c, random_state=cfg.seed).fit(
        _features(reps, cfg.ope)[every.q], every.a, n_prompts=len(reps.prompt_ids), folds=folds)
    P = _per_query_oof(prop.oof_, every.q, len(reps.query_ids))
    y_range = (float(every.y.min()), float(every.y.max()))
    q_hat = (crossfit_q_hat(reps, every, cfg.causal, folds, cfg.seed, cfg.device) if bundle is None
             else _saved_q_hat(bundle.model, reps, y_range))
    qs = np.flatnonzero(np.logical_and.reduce([p.covered for p in policies]))
    if len(qs) < 2:
        raise DataError(f"the policies are all defined on only {len(qs)} logged queries",
                        fix="pass assignments over the logs' queries (check query ids; --queries all)")
    held = held_out_rows(table, reps, qs)
    p_logged = logged_propensity(table, held.rows)
    source = "logged (propensity column)" if p_logged is not None else "estimated (cross-fitted, the reward model's folds)"
    diag = _propensity_diagnostics(prop, P[qs], [str(p) for p in reps.prompt_ids], source, cfg.ope) | {
        "reward_model": "cross-fitted on the logs" if bundle is None else f"model bundle {bundle.path}"}
    named = {p.name: (p.policy[qs] if np.ndim(p.policy) else p.policy) for p in policies}
    note, n_before = None, len(held.y)
    if p_logged is None:
        held, note = _rows_with_evidence(P[qs], held, [str(p) for p in reps.prompt_ids], {})
    p = P[qs][held.q, held.a] if p_logged is None else p_logged
    with _printed_warnings():
        values = estimated_policy_values(BanditLogs(held.q, held.a, held.y, p, logged=p_logged is not None), named,
                                         None if q_hat is None else q_hat[qs], cfg.ope, P[qs], None, diag, "the logs")
    if note:
        values.method += f"; {note}"
    from cpo_engine.causal.ope_decision import decide

    decision = decide(values, cfg.ope.level)
    coverage = coverage_sentence(policies, len(qs), len(np.unique(held.q)), table.num_rows, n_before, len(held.y),
                                 note)
    out = Path(cfg.out)
    result = {"format": "cpo-ope/1", "data": info, "n_queries": len(qs), "n_rows": len(held.y),
              "coverage": coverage, "decision": decision.to_dict(), "config": asdict(cfg)} | values.to_dict()
    paths = {"json": atomic_write_json(out / "ope.json", json.loads(json.dumps(result, default=json_default_str))),
             "table": atomic_write_text(out / "ope.md", ope_table(values, decision, coverage))}
    write_manifest(out, "ope", cfg, paths, started_at=started, data=info)
    return OffPolicyResult(out, values, len(qs), paths, decision, coverage)


def coverage_sentence(policies: list[TargetPolicy], n_covered: int, n_valued: int, n_rows: int, n_rows_covered: int,
                      n_rows_valued: int, row_note: str | None) -> str:
    """Which logged queries and rows the values use, and why the others were left out (the policies' coverage,
    rows whose logged prompt has no propensity)."""
    n_q = len(policies[0].covered)
    head = f"valued on {n_valued:,} of {n_q:,} logged queries ({n_rows_valued:,} of {n_rows:,} rows)"
    why = []
    if n_covered < n_q:
        why.append(f"{n_q - n_covered:,} queries are not covered by every policy, and all policies are valued on the "
                   "same queries")
        why += [f"policy '{p.name}' covers {int(p.covered.sum()):,}" + (f" ({p.why_not})" if p.why_not else "")
                for p in policies if not p.covered.all()]
    if n_rows_valued < n_rows_covered:
        why.append(f"{n_rows_covered - n_rows_valued:,} rows have no propensity: {row_note}")
    return head + (": " + "; ".join(why) if why else ": every logged query and row") + "."


def ope_table(values: PolicyValues, decision: Any = None, coverage: str = "") -> str:
    """Markdown: one row per policy, best first: the headline value with its interval, the difference from the
    logging policy, the weight diagnostics; then which rows were used, and the decision line last (every
    estimator of every policy is in ope.json)."""
    head = ["| policy | value (95% CI) | vs logging policy (95% CI) | evidence | DR | IPW | ESS | off-support |",
            "|---|---|---|---|---|---|---|---|"]
    rows = []
    for name, e in sorted(values.estimates.items(), key=lambda kv: -kv[1].value):
        ests, d = values.all_estimates.get(name, {}), values.vs_logging.get(name)
        vs = "" if d is None else f"{d['diff']:+.4f} ({d['ci_low']:+.4f} to {d['ci_high']:+.4f})"
        cells = [f"{ests[k].value:.4f}" if k in ests else "" for k in ("dr", "ipw")]
        diag = [f"{e.ess:.0f}" if e.ess is not None else "", f"{e.off_support:.1%}" if e.off_support is not None else ""]
        lo, hi = e.reported  # the bounds when the policy is mostly off the logs' support
        rows.append(f"| {name} | {e.value:.4f} ({lo:.4f} to {hi:.4f}) | {vs} | {e.evidence} | "
                    + " | ".join(cells + diag) + " |")
    notes = [(f"\n{values.method}; propensities: {values.diagnostics.get('propensity_source')}; reward model: "
              f"{values.diagnostics.get('reward_model')}.")]
    notes += [f"- {name}: {w}" for name, e in values.estimates.items() for w in e.warnings]
    notes += [f"\n{coverage}"] if coverage else []
    notes += [f"\n{decision.line()}"] if decision is not None else []
    return "\n".join(head + rows + notes) + "\n"


__all__ = [
    "HeldOut",
    "OffPolicyResult",
    "TargetPolicy",
    "coverage_sentence",
    "crossfit_q_hat",
    "held_out_policy_values",
    "held_out_rows",
    "logged_propensity",
    "ope_table",
    "optimize_policy_values",
    "read_policy",
    "run_ope",
    "run_policy_values",
    "table_policy_values",
]
