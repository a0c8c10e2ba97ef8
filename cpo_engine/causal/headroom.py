"""Headroom first: before optimizing, how much of the score variance lies between prompts and how much is
response noise, and whether optimizing the prompt can pay.

From logged (query, prompt, score) rows:

* **response noise**: the pooled variance of repeated rows of one (query, prompt) cell (samples of the same
  prompt on the same query), when the data hold any;
* **between-prompt variance** tau^2 of the prompts' mean scores: a two-way ANOVA method-of-moments estimate on
  query-centred cell means (each cell's mean minus the mean of the prompts logged on that query, so query
  difficulty cancels): tau^2 = var_p(m_p) - e with e = MS_resid * mean_p(1 / n_p) the noise variance of a
  prompt mean, exact in expectation for a full grid. tau^2 is the variance of these logged prompts' true means
  (fixed effects); its standard error is the noncentral chi-square one, sqrt((2 e^2 + 4 e tau^2) / (P - 1) +
  2 e^2 / df_resid);
* **prompt x query interaction** (what a per-query choice could use): MS_resid minus the response noise of a
  cell mean, when repeats exist.

The verdict: optimizing can pay when the ANOVA F test of equal prompt means, F = var_p(m_p) / e on
(P - 1, df_resid) degrees of freedom, rejects at 5% (the logged prompts differ beyond noise); otherwise there is
no detectable headroom among the logged prompts.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

Z95 = 1.959963984540054


def _codes(values: Sequence[Any]) -> tuple[np.ndarray, int]:
    _, inv = np.unique(np.asarray([str(v) for v in values]), return_inverse=True)
    return inv, int(inv.max()) + 1 if inv.size else 0


def response_noise(q: np.ndarray, p: np.ndarray, y: np.ndarray, n_p: int) -> tuple[float | None, int, np.ndarray,
                                                                                      np.ndarray]:
    """Pooled within-cell variance (None without repeats), its degrees of freedom, cell sums and counts."""
    cell = q * n_p + p
    cnt = np.bincount(cell)
    s = np.bincount(cell, weights=y, minlength=cnt.size)
    ss = np.bincount(cell, weights=y * y, minlength=cnt.size)
    used = cnt > 0
    within = float(np.sum(ss[used] - s[used] ** 2 / cnt[used]))
    df = int(np.sum(cnt[used] - 1))
    return (max(within, 0.0) / df if df > 0 else None), df, s, cnt


def headroom(query_ids: Sequence[Any], prompt_ids: Sequence[Any], scores: Sequence[float]) -> dict[str, Any]:
    """Between-prompt variance of the mean score vs response noise, and the verdict (see the module)."""
    y = np.asarray(scores, dtype=np.float64)
    ok = np.isfinite(y)
    q, n_q = _codes(np.asarray(query_ids, dtype=object)[ok])
    p, n_p = _codes(np.asarray(prompt_ids, dtype=object)[ok])
    return headroom_codes(q, n_q, p, n_p, y[ok])


def headroom_codes(q: np.ndarray, n_q: int, p: np.ndarray, n_p: int, y: np.ndarray) -> dict[str, Any]:
    """:func:`headroom` of integer-coded queries (0..n_q-1) and prompts (0..n_p-1) with finite scores."""
    out: dict[str, Any] = {"rows": int(y.size), "prompts": n_p, "queries": n_q, "total_variance": float(np.var(y))
                           if y.size else None}
    noise, noise_df, s, cnt = response_noise(q, p, y, max(n_p, 1))
    out.update(response_noise_variance=noise, repeated_cells=int(np.sum(cnt > 1)), noise_df=noise_df)
    M = np.full((n_q, n_p), np.nan)
    used = np.flatnonzero(cnt)
    M[used // max(n_p, 1), used % max(n_p, 1)] = s[used] / cnt[used]
    M = M[np.sum(np.isfinite(M), axis=1) >= 2]  # queries with >= 2 prompts: query difficulty cancels
    n_per_prompt = np.sum(np.isfinite(M), axis=0)
    keep = n_per_prompt >= 2
    M, n_per_prompt = M[:, keep], n_per_prompt[keep]
    P, Q = M.shape[1], M.shape[0]
    n_cells = int(np.isfinite(M).sum())
    df_r = n_cells - Q - P + 1
    if P < 2 or df_r < 1:
        return out | {"between_prompt_variance": None, "se": None, "verdict": "unknown",
                      "reason": "fewer than 2 prompts logged on the same queries: between-prompt variance not "
                                "estimable", "line": "headroom: unknown (fewer than 2 prompts logged on shared queries)"}
    r = M - np.nanmean(M, axis=1, keepdims=True)
    m_p = np.nanmean(r, axis=0)
    ms_r = float(np.nansum((r - m_p) ** 2) / df_r)
    inv_n = float(np.mean(1.0 / n_per_prompt))
    v_m = float(np.var(m_p, ddof=1))
    e = ms_r * inv_n
    tau2 = v_m - e
    se = math.sqrt((2.0 * e ** 2 + 4.0 * e * max(tau2, 0.0)) / (P - 1) + 2.0 * e ** 2 / df_r)
    from scipy.stats import f as f_dist

    p_value = float(f_dist.sf(v_m / e, P - 1, df_r)) if e > 0 else (0.0 if v_m > 0 else 1.0)
    mean_reps = float(np.mean(cnt[cnt > 0]))
    inter = None if noise is None else ms_r - noise / mean_reps
    out.update(between_prompt_variance=tau2, se=se, between_prompt_sd=math.sqrt(max(tau2, 0.0)),
               ci_low=tau2 - Z95 * se, ci_high=tau2 + Z95 * se, residual_variance=ms_r,
               interaction_variance=inter, f_test_p=p_value, prompts_compared=P, queries_compared=Q,
               prompt_means_spread=float(np.ptp(m_p)))
    total = out["total_variance"] or float("nan")
    out["between_prompt_share"] = max(tau2, 0.0) / total if total > 0 else None
    out["response_noise_share"] = None if noise is None or not total > 0 else noise / total
    out["verdict"] = "can pay" if p_value < 0.05 else "no detectable headroom"
    out["line"] = headroom_line(out)
    return out


def headroom_line(h: dict[str, Any]) -> str:
    """One console line."""
    if h.get("between_prompt_variance") is None:
        return h.get("line", "headroom: unknown")
    noise = ("no repeated cells, so response noise is not separated from the prompt x query interaction"
             if h["response_noise_variance"] is None else
             f"response noise sd {math.sqrt(h['response_noise_variance']):.3f} "
             f"({h['response_noise_share']:.0%} of the score variance, {h['repeated_cells']} repeated cells)")
    tail = ("optimizing can pay: the logged prompts differ beyond noise" if h["verdict"] == "can pay" else
            "no detectable headroom: the logged prompts do not differ beyond noise, a new prompt must beat "
            "them by more than they differ")
    return (f"headroom: between-prompt sd {h['between_prompt_sd']:.3f} (variance {h['between_prompt_variance']:.2g} "
            f"+- {h['se']:.2g} se, F test p={h['f_test_p']:.2g}, {h['between_prompt_share']:.0%} of the score variance, {h['prompts_compared']} "
            f"prompts on {h['queries_compared']} queries); {noise} -> {tail}")


def headroom_table(table: Any) -> dict[str, Any]:
    """:func:`headroom` of a triplet table (``query_id, prompt_id, score``)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    y = table.column("score").cast(pa.float64()).to_numpy(zero_copy_only=False)
    ok = np.isfinite(y)

    def codes(name: str) -> tuple[np.ndarray, int]:
        enc = pc.dictionary_encode(table.column(name).cast(pa.string())).combine_chunks()
        idx = np.asarray(enc.indices.to_numpy(zero_copy_only=False))[ok]
        uniq, inv = np.unique(idx, return_inverse=True)  # only the codes of rows with a score
        return inv.reshape(-1), int(uniq.size)

    (q, n_q), (p, n_p) = codes("query_id"), codes("prompt_id")
    return headroom_codes(q, n_q, p, n_p, y[ok])


__all__ = ["headroom", "headroom_codes", "headroom_line", "headroom_table", "response_noise"]
