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

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from cpo_engine.causal.ope import BanditLogs, OPEConfig, causal_q_hat
from cpo_engine.causal.policy_values import (PolicyValues, estimated_policy_values, logged_means,
                                             measured_policy_values)
from cpo_engine.data.grid import cell_means
from cpo_engine.exceptions import ConfigError, DataError
from cpo_engine.workflows.common import scores_and_weights

log = logging.getLogger(__name__)


@dataclass
class HeldOut:
    """The rows of a set of queries, re-indexed 0..n_queries-1 (``q``) in the order of ``queries``."""

    queries: np.ndarray
    rows: np.ndarray
    q: np.ndarray
    a: np.ndarray
    y: np.ndarray


def held_out_rows(table: pa.Table, reps: Any, queries: np.ndarray) -> HeldOut:
    """The table's rows whose query is in ``queries`` (indices into ``reps.query_ids``)."""
    y, _ = scores_and_weights(table)
    pos = np.full(len(reps.query_ids), -1, dtype=np.int64)
    pos[queries] = np.arange(len(queries))
    rows = np.flatnonzero(pos[reps.row_query] >= 0)
    return HeldOut(np.asarray(queries), rows, pos[reps.row_query[rows]], reps.row_prompt[rows], y[rows])


def logged_propensity(table: pa.Table, rows: np.ndarray) -> np.ndarray | None:
    """The ``propensity`` column on ``rows`` when the table has one without gaps there (None otherwise)."""
    if "propensity" not in table.column_names:
        return None
    col = table.column("propensity").take(pa.array(rows))
    if col.null_count:
        log.warning("the propensity column has %d empty values on the evaluated rows: propensities are estimated "
                    "from the query features instead", col.null_count)
        return None
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)


def _propensity_diagnostics(model: Any, P: np.ndarray, prompt_ids: list[str], source: str,
                            ope: OPEConfig) -> dict[str, Any]:
    from cpo_engine.causal.propensity import overlap_by_prompt

    return {"propensity_source": source, "propensity_model": model.diagnostics(),
            "min_propensity": ope.min_propensity, "overlap_by_prompt": overlap_by_prompt(P, prompt_ids, ope.min_propensity)}


def _values(held: HeldOut, policies: dict[str, Any], static_name: str | None, q_hat: np.ndarray | None,
            P: np.ndarray, p_logged: np.ndarray | None, diagnostics: dict[str, Any], ope: OPEConfig,
            n_prompts: int, where: str) -> PolicyValues:
    """Measured values when every held-out cell is observed, else off-policy estimates."""
    Y = cell_means(held.q, held.a, held.y, len(held.queries), n_prompts)[0]
    if np.isfinite(Y).all():
        return measured_policy_values(Y, policies, logged_means(held.q, held.y, len(held.queries)), static_name,
                                      ope.level)
    p = P[held.q, held.a] if p_logged is None else p_logged
    return estimated_policy_values(BanditLogs(held.q, held.a, held.y, p), policies, q_hat, ope, P, static_name,
                                   diagnostics, where)


def held_out_policy_values(reps: Any, table: pa.Table, logs: Any, test: np.ndarray, causal: Any,
                           policies: dict[str, Any], static_name: str | None, ope: OPEConfig,
                           seed: int = 0) -> PolicyValues:
    """`cpo run`: each policy's value on the held-out queries (``policies`` hold a prompt index, or one
    per held-out query in the order of ``test``).

    Measured when the held-out rows observe every (query, prompt) cell; else estimated off-policy
    (DR with the causal model fitted on ``logs``, the training rows).
    """
    from cpo_engine.causal.propensity import PropensityModel

    held = held_out_rows(table, reps, test)
    n_p = len(reps.prompt_ids)
    model = PropensityModel(ope.propensity_model, ope.propensity_c, random_state=seed).fit(
        reps.X[logs.q], logs.p, n_prompts=n_p, folds=causal.folds_)
    P = model.predict_proba(reps.X[test])
    p_logged = logged_propensity(table, held.rows)
    diag = _propensity_diagnostics(model, P, [str(p) for p in reps.prompt_ids],
                                   "logged (propensity column)" if p_logged is not None else
                                   "estimated (cross-fitted on the training logs, the DML folds)", ope)
    q_hat = causal_q_hat(causal, reps.X[test], reps.T, (float(logs.y.min()), float(logs.y.max())))
    return _values(held, policies, static_name, q_hat, P, p_logged, diag, ope, n_p, "held-out logs")


def table_policy_values(reps: Any, table: pa.Table, model: Any, policies: dict[str, Any], static_name: str | None,
                        ope: OPEConfig, cv: int = 5, seed: int = 0) -> PolicyValues:
    """`cpo optimize`: each policy's value on the table's queries with a saved causal model (measured on
    a full grid; else DR with the saved model and propensities from the column or a model cross-fitted
    on the table's rows)."""
    from cpo_engine.causal.propensity import PropensityModel

    everyone = np.arange(len(reps.query_ids))
    held = held_out_rows(table, reps, everyone)
    n_p = len(reps.prompt_ids)
    prop = PropensityModel(ope.propensity_model, ope.propensity_c, cv=cv, random_state=seed).fit(
        reps.X[held.q], held.a, n_prompts=n_p, groups=held.q)
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


def _saved_q_hat(model: Any, reps: Any, y_range: tuple[float, float]) -> np.ndarray | None:
    from cpo_engine.exceptions import NotFittedError

    try:
        return causal_q_hat(model, reps.X, reps.T, y_range)
    except NotFittedError as exc:
        log.warning("the saved model has no nuisance models (%s): off-policy values use self-normalized IPW, "
                    "without the reward model", exc)
        return None




def run_policy_values(reps: Any, table: pa.Table, logs: Any, test: np.ndarray, causal: Any,
                      test_choices: dict[str, np.ndarray], static: int, cfg: Any) -> PolicyValues:
    """`cpo run`'s call: the pool choices (keys of :data:`~cpo_engine.workflows.run.POLICY_LABELS`, one
    prompt per held-out query) and the best static prompt, valued on the held-out queries."""
    from cpo_engine.workflows.run import POLICY_LABELS

    static_name = f"best static ({reps.prompt_ids[static]})"
    policies = {POLICY_LABELS.get(k, k): c for k, c in test_choices.items()} | {static_name: static}
    return held_out_policy_values(reps, table, logs, test, causal, policies, static_name, cfg.ope, cfg.seed)


__all__ = ["HeldOut", "held_out_rows", "held_out_policy_values", "logged_propensity", "run_policy_values",
           "table_policy_values"]
