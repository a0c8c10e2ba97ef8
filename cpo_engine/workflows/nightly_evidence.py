"""Promotion on measured evidence without an LLM: tonight's policy against the live one on fresh logs.

A share (``promote.holdout_share``) of tonight's new queries (ids not logged on an earlier date) is held out of the
night's fit. On their logged rows, which neither the night's model nor its propensity model saw, every policy is
valued by :func:`~cpo_engine.workflows.ope.held_out_policy_values`, as `cpo run` values its held-out queries:
*measured* (the mean recorded score of each policy's choices) when the rows observe every (query, prompt) cell,
else *estimated* off-policy (doubly robust with the night's causal model as the reward model; propensities from
the logs' ``propensity`` column or a model fitted on the fit rows; overlap checked: a policy whose choices the logs
almost never made is valued only within bounds that do not trust the reward model there).

The challengers are tonight's per-query policy (unless it falls back to its static prompt) and tonight's best
static prompt; the baseline is the live prompt or policy (``live.json``), or, when nothing is live, the logging
policy (what the logs did). A challenger goes live when the lower end of the ``promote.level`` interval of its
paired (per query) difference from the baseline, Bonferroni-adjusted over the challengers, is above
``promote.margin``; the evidence (estimator, queries and rows used, values, interval, against what) is kept in
``live.json`` and in the night's report.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TYPE_CHECKING

import numpy as np
import pyarrow as pa

from cpo_engine.settings import NightlyConfig

if TYPE_CHECKING:
    from cpo_engine.causal.dml import CausalRewardModel
    from cpo_engine.policy.policy import PolicyState
    from cpo_engine.embedding.representations import Representations
    from cpo_engine.policy.represent import Representer


@dataclass
class HeldOutQueries:
    """Tonight's queries held out of the fit (``ids``), or why none were (``skipped``)."""

    ids: set[str]
    n_tonight: int
    n_fresh: int
    skipped: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"queries": len(self.ids), "tonight_queries": self.n_tonight, "fresh_queries": self.n_fresh,
                "skipped": self.skipped}


def choose_held_out(table: pa.Table, new: pa.Table | None, date: str, cfg: NightlyConfig) -> HeldOutQueries:
    """A seeded share of tonight's fresh queries (ids no earlier date of the window logged), held out of the fit
    when promotion rests on logs (no LLM verifies); the draw depends on the seed and the date."""
    if new is None:
        return HeldOutQueries(set(), 0, 0, "no new triplets tonight (--new): there are no fresh logs to value on")
    tonight = list(dict.fromkeys(str(q) for q in new.column("query_id").to_pylist()))
    earlier: set[str] = set()
    if "nightly_date" in table.column_names:
        dates, ids = table.column("nightly_date").to_pylist(), table.column("query_id").to_pylist()
        earlier = {str(q) for d, q in zip(dates, ids) if d != date}
    fresh = sorted(q for q in tonight if q not in earlier)
    n = int(round(cfg.promote.holdout_share * len(fresh)))
    if cfg.promote.holdout_share == 0:
        return HeldOutQueries(set(), len(tonight), len(fresh), "promote.holdout_share is 0: no held-out queries")
    if n < cfg.promote.min_queries:
        return HeldOutQueries(set(), len(tonight), len(fresh),
                              f"{len(fresh)} fresh queries tonight x promote.holdout_share={cfg.promote.holdout_share}"
                              f" = {n} held-out queries < promote.min_queries={cfg.promote.min_queries}")
    seed = int.from_bytes(hashlib.sha256(f"{cfg.seed}:{date}".encode()).digest()[:4], "little")
    pick = np.random.default_rng(seed).choice(len(fresh), size=n, replace=False)
    return HeldOutQueries({fresh[i] for i in pick}, len(tonight), len(fresh))


def fit_rows(reps: Representations, held_out: set[str]) -> np.ndarray:
    """Indices of the table rows the night's model is fitted on: every row of a query not held out."""
    ids = np.asarray([str(q) for q in reps.query_ids], dtype=object)
    keep = ~np.isin(ids, list(held_out))
    return np.flatnonzero(keep[reps.row_query])


def promote_on_logs(state: Path, run_dir: Path, date: str, cfg: NightlyConfig, table: pa.Table, reps: Representations,
                    model: CausalRewardModel, rep: Representer, rows: np.ndarray, policy_state: PolicyState,
                    live: dict[str, Any]) -> dict[str, Any]:
    """Value tonight's challengers and the live one on the held-out queries, and decide; returns the record
    `search_and_promote` keeps (``status``: promoted / kept, ``reason``, ``evidence``, and ``new_live``: the
    live.json to stage, None to keep the live one)."""
    from cpo_engine.workflows.common import scores_and_weights
    from cpo_engine.workflows.ope import held_out_policy_values
    from cpo_engine.workflows.run_types import Logs

    ids = [str(p) for p in reps.prompt_ids]
    held = np.flatnonzero(~np.isin(np.arange(len(reps.query_ids)), np.unique(reps.row_query[rows])))
    challengers = _challengers(model, policy_state, reps, held, cfg, run_dir, state)
    baseline, base_policy, why_not = _baseline(state, live, reps, held, rep, cfg, ids)
    if why_not:
        return {"status": "kept", "reason": why_not, "evidence": None, "new_live": None}
    y, w = scores_and_weights(table)
    logs = Logs(reps.row_query[rows], reps.row_prompt[rows], y[rows], None if w is None else w[rows])
    policies = {name: p for name, (p, _) in challengers.items()} | ({baseline: base_policy} if base_policy is not None
                                                                    else {})
    values = (_measured(reps, y, held, policies, baseline if live else None, cfg.promote.level)
              or held_out_policy_values(reps, table, logs, held, model, policies, baseline if live else None, cfg.ope,
                                        cfg.seed))
    return decide(values, challengers, baseline, held, cfg, state, run_dir, date,
                  n_rows=int(np.isin(reps.row_query, held).sum()))


def _measured(reps: Representations, y: np.ndarray, held: np.ndarray, policies: dict[str, Any], static_name: str | None,
              level: float) -> Any:
    """Measured values (mean recorded score of each policy's choices, per query) when the held-out rows observe
    every cell the policies choose (a grid of the prompts they use: other prompts of the window need not be
    there); None otherwise."""
    from cpo_engine.causal.policy_values import logged_means, measured_policy_values
    from cpo_engine.data.grid import cell_means

    pos = np.full(len(reps.query_ids), -1, dtype=np.int64)
    pos[held] = np.arange(len(held))
    rows = np.flatnonzero(pos[reps.row_query] >= 0)
    q, a = pos[reps.row_query[rows]], reps.row_prompt[rows]
    Y, _ = cell_means(q, a, y[rows], len(held), len(reps.prompt_ids))
    idx = np.arange(len(held))
    if not all(np.isfinite(Y[idx, np.broadcast_to(np.asarray(c), idx.shape)]).all() for c in policies.values()):
        return None
    return measured_policy_values(Y, policies, logged_means(q, y[rows], len(held)), static_name, level)


def _challengers(model: CausalRewardModel, policy_state: PolicyState, reps: Representations, held: np.ndarray,
                 cfg: NightlyConfig, run_dir: Path,
                 state: Path) -> dict[str, tuple[Any, dict[str, Any]]]:
    """name -> (the choice on the held-out queries, the live record it would become)."""
    from cpo_engine.policy.policy import Policy

    run = str(run_dir.relative_to(state))
    inc = int(policy_state.incumbent)
    static = {"kind": "static", "id": policy_state.prompt_ids[inc], "text": policy_state.prompt_texts[inc]}
    out: dict[str, tuple[Any, dict[str, Any]]] = {f"tonight's static prompt '{static['id']}'": (inc, static)}
    policy = Policy(model, policy_state, cfg.policy, device="cpu")
    if policy.fallback:  # it gives every query the static prompt: one challenger, not two
        return out
    choice = policy.choose(reps.X[held]).choice
    arms = [{"id": p, "text": t, "role": "logged"} for p, t in zip(policy_state.prompt_ids, policy_state.prompt_texts)]
    record = {"kind": "per_query", "arms": arms, "z": cfg.selection.z, "simultaneous": cfg.selection.simultaneous}
    out[f"tonight's per-query policy ({run})"] = (np.asarray(choice, dtype=np.int64), record)
    return out


def _baseline(state: Path, live: dict[str, Any], reps: Representations, held: np.ndarray, rep: Representer,
              cfg: NightlyConfig,
              ids: list[str]) -> tuple[str, Any, str | None]:
    """(name, its choice on the held-out queries or None for the logging policy, why it cannot be valued)."""
    from cpo_engine.causal.policy_values import LOGGING

    if not live:
        return LOGGING, None, None
    if live.get("kind") == "static":
        name = f"live static prompt '{live['id']}' ({live.get('run')})"
        if live["id"] not in ids:
            return name, None, (f"the live prompt '{live['id']}' was not logged in tonight's window: it cannot be valued "
                                "on tonight's logs, so nothing is compared and it stays live (log it beside the others "
                                "to let a challenger replace it)")
        return name, ids.index(live["id"]), None
    name = f"live per-query policy ({live.get('run')})"
    chosen = _live_choice(state, live, reps, held, rep, cfg)
    missing = sorted({c for c in chosen if c not in ids})
    if missing:
        return name, None, (f"the live per-query policy chooses prompt(s) {', '.join(missing)}, not logged in tonight's "
                            "window: it cannot be valued on tonight's logs and stays live")
    return name, np.asarray([ids.index(c) for c in chosen], dtype=np.int64), None


def _live_choice(state: Path, live: dict[str, Any], reps: Representations, held: np.ndarray, rep: Representer,
                 cfg: NightlyConfig) -> list[str]:
    """The prompt ids the live per-query policy (its own bundle, encoder checked) picks for the held-out queries."""
    from cpo_engine.embedding import text_embedder
    from cpo_engine.policy.bundle import ModelBundle
    from cpo_engine.policy.policy import Policy, PolicyState

    bundle = ModelBundle.load(state / live["run"])
    bundle.check_encoder(rep.encoder)
    features = text_embedder(rep.encoder, rep.cache, bundle.query_pca, bundle.info.get("query_prefix") or "")
    policy = Policy(bundle.model, PolicyState.load(bundle.path), cfg.policy, query_features=features, device="cpu")
    texts = [str(reps.query_texts[i]) for i in held]
    t = policy.assign(texts, query_ids=[str(reps.query_ids[i]) for i in held])
    return [str(p) for p in t.column("recommended_prompt_id").to_pylist()]


def decide(values: Any, challengers: dict[str, tuple[Any, dict[str, Any]]], baseline: str, held: np.ndarray,
           cfg: NightlyConfig, state: Path, run_dir: Path, date: str, n_rows: int | None = None) -> dict[str, Any]:
    """The promotion rule on the values: the best challenger whose paired difference from the baseline has a
    (Bonferroni-adjusted) lower bound above the margin goes live."""
    from cpo_engine.causal.ope_decision import shown_better

    level, k = cfg.promote.level, len(challengers)
    est = values.estimates
    each, vs, winners = shown_better(est, list(challengers), baseline, level, cfg.promote.margin)
    rows = {name: _row(est[name], vs[name]) for name in challengers}
    common = {"method": values.method, "evidence": values.evidence, "estimator": est[next(iter(challengers))].estimator,
              "level": level, "level_each": each,
              "correction": f"Bonferroni over {k} challenger(s)" if k > 1 else "none (one challenger)",
              "margin": cfg.promote.margin, "held_out_queries": int(len(held)),
              "rows": n_rows if n_rows is not None else max(int(e.n_rows) for e in est.values()),
              "against": {"name": baseline, **_value(est[baseline])}, "challengers": rows}
    if not winners:
        best = max(rows, key=lambda n: rows[n]["difference"]["diff"])
        d = rows[best]["difference"]
        return {"status": "kept", "evidence": common, "new_live": None,
                "reason": f"no challenger beat {baseline} on {len(held)} held-out queries: the best, {best}, "
                          f"{_diff(d)}: its lower bound is not > margin {cfg.promote.margin}"}
    name = max(winners, key=lambda n: rows[n]["value"])
    evidence = common | {"candidate": name, "value": rows[name]["value"], "ci_low": rows[name]["ci_low"],
                         "ci_high": rows[name]["ci_high"], "difference": rows[name]["difference"]}
    record = challengers[name][1] | {"date": date, "run": str(run_dir.relative_to(state)), "evidence": evidence}
    return {"status": "promoted", "evidence": evidence, "new_live": record,
            "reason": f"{name} beat {baseline} on {len(held)} held-out queries ({values.method}): "
                      f"{_diff(rows[name]['difference'])} > margin {cfg.promote.margin}"}


def _value(e: Any) -> dict[str, Any]:
    lo, hi = e.reported
    return {"value": float(e.value), "ci_low": float(lo), "ci_high": float(hi), "estimator": e.estimator,
            "n_queries": int(e.n_queries), "n_rows": int(e.n_rows)}


def _row(e: Any, diff: dict[str, Any]) -> dict[str, Any]:
    overlap = {k: getattr(e, k) for k in ("ess", "clipped_share", "off_support", "bounded")}
    return _value(e) | {"difference": {k: float(v) if isinstance(v, (float, np.floating)) else v
                                       for k, v in diff.items()},
                        "overlap": overlap, "warnings": list(e.warnings)}


def _diff(d: dict[str, Any]) -> str:
    return (f"difference {d['diff']:+.4f} ({d['level']:.1%} CI {d['ci_low']:+.4f} to {d['ci_high']:+.4f}, "
            f"{d['n']} queries{', bounds: off the logs support' if d.get('bounded') else ''})")


__all__ = ["HeldOutQueries", "choose_held_out", "fit_rows", "promote_on_logs", "decide"]
