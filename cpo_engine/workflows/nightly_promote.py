"""Tonight's generative search, its verification with the LLM, and the promotion rule of `cpo nightly`.

``live.json`` in the state folder names what is served: a static prompt (``kind: static``, its id and
text) or a per-query policy (``kind: per_query``: the run whose model routes each query, the prompts
it routes among and its z). Only a measured win replaces it: tonight's searched prompts, the best
logged prompts and tonight's per-query policy run on held-out queries against the live one with the
LLM, and the challenger with the largest measured uplift goes live when that uplift is positive and
the lower end of its 95% interval is >= ``verify.margin``. Otherwise the live one stays, and the
returned record says why. On the first verified night (nothing live yet) the incumbent is the
baseline, and it goes live when no challenger beats it. Without an LLM the rule is applied to values on
held-out fresh logs instead (:mod:`cpo_engine.workflows.nightly_evidence`).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence, TYPE_CHECKING

import numpy as np
import pyarrow as pa

from cpo_engine.causal.evidence import PREDICTED, LabelledValue
from cpo_engine.search.proposers import proposer_spec
from cpo_engine.utils import atomic_write_json, atomic_write_parquet
from cpo_engine.settings import NightlyConfig
from cpo_engine.workflows.nightly_state import read_json, staged

if TYPE_CHECKING:
    from cpo_engine.workflows.nightly_evidence import HeldOutQueries
    from cpo_engine.generation.types import Backend
    from cpo_engine.causal.dml import CausalRewardModel
    from cpo_engine.causal.head import LinearHead
    from cpo_engine.policy.policy import PolicyState
    from cpo_engine.embedding.representations import Representations
    from cpo_engine.policy.represent import Representer


def search(table: pa.Table, reps: Representations, head: LinearHead, rep: Representer, cfg: NightlyConfig,
           run_dir: Path, held_out: set[str] | frozenset[str] = frozenset()) -> tuple[pa.Table | None, dict[str, Any]]:
    """The generative search from the logged prompts (the configured proposer), scored for every query;
    writes ``candidates.parquet``. Its numbers are predictions. A proposer that reads the data (worked examples)
    sees only the rows of queries not in ``held_out`` (the queries promotion is decided on)."""
    from cpo_engine.workflows.run import generative_search

    if not proposer_spec(cfg.proposer.kind).generative:
        return None, {"proposer": cfg.proposer.kind}
    ids = np.asarray([str(q) for q in reps.query_ids], dtype=object)
    train = np.flatnonzero(~np.isin(ids, list(held_out)))
    result = generative_search(table, reps, head, cfg, rep.prompt_embedder(reps), train=train)
    cands = result.table()
    atomic_write_parquet(cands, run_dir / "candidates.parquet")
    best = cands.slice(0, 1).to_pylist()[0]
    effect = LabelledValue(best["static_effect"], best["ci_low"], best["ci_high"], PREDICTED,
                           "causal model: uplift over the incumbent, mean over tonight's queries")
    return cands, {"proposer": cfg.proposer.kind, "candidates": len(result.candidates),
                   "best": {"id": best["id"], "text": best["text"], "uplift": effect.to_dict()}}


def live_arms(live: dict[str, Any]) -> list[Any]:
    """The arms of the live prompt or policy (role 'live')."""
    from cpo_engine.workflows.verify import Arm

    if live.get("kind") == "per_query":
        return [Arm(a["id"], a["text"], "live") for a in live["arms"]]
    return [Arm(live["id"], live["text"], "live")] if live else []


def live_route(state: Path, live: dict[str, Any], cfg: NightlyConfig, rep: Representer) -> Any:
    """``query_texts -> arm index`` of a live per-query policy (its own model routes; its arms come
    first in tonight's arms, in the same order), or None for a static live prompt."""
    if live.get("kind") != "per_query":
        return None
    from dataclasses import replace

    from cpo_engine.workflows.verify import predict

    arms = live_arms(live)
    # the rule it was verified with: its z and multiplier (a record from before "simultaneous" was stored: pointwise)
    selection = replace(cfg.selection, z=live.get("z", cfg.selection.z), simultaneous=live.get("simultaneous", False))

    def route(query_texts: Sequence[str]) -> np.ndarray:
        return predict(state / live["run"] / "model", query_texts, arms, selection, cfg.embed).choice

    return route


def search_and_promote(state: Path, run_dir: Path, date: str, cfg: NightlyConfig, table: pa.Table,
                       reps: Representations,
                       model: CausalRewardModel, rep: Representer, backend: Backend | None = None, *,
                       held: HeldOutQueries | None = None, rows: np.ndarray | None = None,
                       policy_state: PolicyState | None = None) -> dict[str, Any]:
    """Search, then (with a ``generation`` section) verify and apply the promotion rule, or (without one)
    value tonight's policy and static prompt against the live one on the held-out fresh logs (``held``: the
    :class:`~cpo_engine.workflows.nightly_evidence.HeldOutQueries`, ``rows``: the rows the model was fitted on,
    ``policy_state``: tonight's saved policy); returns the record the night's report keeps under ``promotion``."""
    from cpo_engine.search import referenced_head

    head, incumbent = referenced_head(model.linear_head(), reps.X, reps.T, cfg.selection.reference)
    cands, found = search(table, reps, head, rep, cfg, run_dir, set(held.ids) if held is not None else set())

    live = read_json(state / "live.json")
    out: dict[str, Any] = {"search": found, "live_before": live or None}
    if cfg.generation is None or not cfg.verify.enabled:
        if held is None or held.skipped or policy_state is None:
            why = held.skipped if held is not None and held.skipped else "no held-out fresh logs"
            return out | {"status": "kept", "live": live or None, "held_out": None if held is None else held.to_dict(),
                          "reason": "no generation backend is configured to verify tonight's prompts, and nothing "
                                    f"can be valued on fresh logs ({why}): tonight's prompts stay predictions and "
                                    "the live one stays"}
        from cpo_engine.workflows.nightly_evidence import promote_on_logs

        decision = promote_on_logs(state, run_dir, date, cfg, table, reps, model, rep, rows, policy_state, live)
        new_live = decision.pop("new_live")
        if new_live is not None:
            atomic_write_json(staged(run_dir, "live.json"), new_live)
        return out | decision | {"live": new_live or live or None, "held_out": held.to_dict()}
    result = verify_night(state, run_dir, cfg, table, reps, incumbent, cands, live, rep, backend)
    verified = result.report

    atomic_write_parquet(_tag(_verified_rows(result), date), staged(run_dir, f"triplets/verified/{date}.parquet"))
    out["verification"] = {k: verified[k] for k in ("baseline", "arms", "policy", "calibration", "budget")}
    best = verified["best_promotable"]
    if best is not None:
        new_live = _live_record(best, result, run_dir, state, date, cfg)
        atomic_write_json(staged(run_dir, "live.json"), new_live)
        return out | {"status": "promoted", "live": new_live,
                      "reason": f"{best['id']} beat the live one: measured uplift {_ci(best['uplift_vs_baseline'])} "
                                f"has a 95% lower bound >= margin {cfg.verify.margin}"}
    why = _why_kept(verified, cfg.verify.margin)
    if not live:
        base = result.arms[0]
        new_live = {"kind": "static", "id": base.id, "text": base.text, "date": date, "run": _rel(run_dir, state),
                    "measured_value": verified["arms"][0]["value"]}
        atomic_write_json(staged(run_dir, "live.json"), new_live)
        return out | {"status": "initial", "live": new_live,
                      "reason": f"nothing was live: the incumbent goes live as measured; {why}"}
    return out | {"status": "kept", "live": live, "reason": why}


def verify_night(state: Path, run_dir: Path, cfg: NightlyConfig, table: pa.Table, reps: Representations, incumbent: int,
                 cands: pa.Table | None, live: dict[str, Any], rep: Representer, backend: Backend) -> Any:
    """Tonight's arms (live first, then the incumbent, best static, searched top-K) on held-out
    queries (``verify.queries``, else tonight's table) against the live prompt or policy."""
    from cpo_engine.data.grid import cell_means
    from cpo_engine.workflows.common import scores_and_weights
    from cpo_engine.workflows.verify import dedupe_arms, pick_arms, read_queries, sample_queries, verify

    y, _ = scores_and_weights(table)
    means, _ = cell_means(reps.row_query, reps.row_prompt, y, len(reps.query_ids), len(reps.prompt_ids))
    with np.errstate(all="ignore"):
        static = int(np.nanargmax(np.nanmean(means, axis=0)))
    ids = [str(p) for p in reps.prompt_ids]
    arms = dedupe_arms(live_arms(live) + pick_arms(ids, list(reps.prompt_texts), incumbent, static, cands, cfg.verify))
    source = cfg.verify.queries or "tonight's triplets"
    queries = sample_queries(read_queries(cfg.verify.queries) if cfg.verify.queries else table, cfg.verify,
                             source=source)
    route = live_route(state, live, cfg, rep)
    baseline = None if route is None else ({"id": "live per-query policy", "role": "live",
                                            "text": f"the per-query policy of {live['run']}"}, route)
    return verify(arms, run_dir / "model", queries, cfg.generation, cfg.verify, run_dir / "verify",
                  selection=cfg.selection, embed=cfg.embed, representer=rep, backend=backend, baseline=baseline)


def _live_record(best: dict[str, Any], result: Any, run_dir: Path, state: Path, date: str,
                 cfg: NightlyConfig) -> dict[str, Any]:
    record = {"date": date, "run": _rel(run_dir, state), "measured_uplift": best["uplift_vs_baseline"],
              "measured_value": best["value"]}
    if best["kind"] == "per_query":
        return record | {"kind": "per_query", "arms": [asdict(a) for a in result.arms], "z": cfg.selection.z,
                         "simultaneous": cfg.selection.simultaneous}
    return record | {"kind": "static", "id": best["id"], "text": best["text"]}


def _why_kept(verified: dict[str, Any], margin: float) -> str:
    cands = [a for a in verified["arms"] if a["uplift_vs_baseline"]]
    cands += [verified["policy"] | {"id": "per-query policy"}] if verified["policy"]["uplift_vs_baseline"] else []
    if not cands:
        return "no challenger could be measured (every call failed?)"
    top = max(cands, key=lambda a: a["uplift_vs_baseline"]["value"])
    return (f"no challenger's measured uplift over the live one has a 95% lower bound >= margin {margin}; the best, "
            f"{top['id']}, measured {_ci(top['uplift_vs_baseline'])}")


def _ci(u: dict[str, Any]) -> str:
    return f"{u['value']:+.4f} (95% CI {u['ci_low']:+.4f} to {u['ci_high']:+.4f}, {u['n']} queries) [measured]"


def _verified_rows(result: Any) -> pa.Table:
    import pyarrow.parquet as pq

    return pq.read_table(result.out / "verified_triplets.parquet")


def _tag(table: pa.Table, date: str) -> pa.Table:
    return table.append_column("nightly_date", pa.array([date] * table.num_rows, pa.string()))


def _rel(path: Path, state: Path) -> str:
    return str(path.relative_to(state))


__all__ = ["search_and_promote", "search", "verify_night", "live_arms", "live_route"]
