"""Edit-family x task (x model) effects, surface and motif effects, and heterogeneity across tasks.

:func:`analyze_edits` runs :class:`~cpo_engine.edits.estimate.PairedEditDML` once per
``(task, model)`` cell on the paired units of :mod:`cpo_engine.edits.pairs`, then controls the false
discovery rate (Benjamini-Hochberg) over *all* family x cell tests together and tests, per family,
whether its effect differs across tasks (Cochran's Q).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from cpo_engine.edits.config import EffectConfig  # re-exported: defined in the light config module
from cpo_engine.edits.estimate import PairedEditDML, bh_qvalues, cochran_q, quantile, two_sided_p
from cpo_engine.edits.extract import SURFACE_FEATURES
from cpo_engine.edits.pairs import FAM_COLS, FAMILIES, PairedUnits

#: Surface changes are reported per these units (e.g. per 10 words added).
SURFACE_SCALE: dict[str, float] = {"d_words": 10.0, "d_sentences": 1.0, "d_imperatives": 1.0, "d_readability": 10.0}

CONTROL_COLS: tuple[str, ...] = ("par_quality", "par_log_words") + tuple(f"par_has_{f}" for f in FAMILIES)


@dataclass
class EditReport:
    """What :func:`analyze_edits` found.

    Attributes
    ----------
    families : DataFrame
        One row per family x task x model: ``effect`` (change in score from adding the family),
        ``se``, ``ci_low``, ``ci_high``, ``p_value``, ``q_value`` (BH over all estimated rows),
        ``significant``, ``se_query``, ``se_jackknife``, ``q_value_query`` (BH with the query-clustered
        se), ``n_edits`` (distinct edits that change the family), ``n_prompts`` (distinct prompts
        that carry it), ``n_units``, ``n_queries``,
        ``status`` (``estimated``, ``aliased``, ``too few edits``, ``no edits``).
    surface : DataFrame
        Same columns for the surface changes (per :data:`SURFACE_SCALE` units), BH within the table.
    motifs : DataFrame
        Marginal effects of inserting (+) a word n-gram (deleting it is the negative), BH within.
    heterogeneity : DataFrame
        Per family (x model): Cochran's ``Q``, ``df``, ``p_value``, ``q_value``, ``I2``, the
        inverse-variance ``pooled`` effect and ``pooled_se`` over tasks.
    config : dict
        The :class:`EffectConfig` used, and data sizes.
    """

    families: pd.DataFrame
    surface: pd.DataFrame
    motifs: pd.DataFrame
    heterogeneity: pd.DataFrame
    config: dict = field(default_factory=dict)


def _cells(units: PairedUnits, by_model: bool) -> list[tuple[str, str, np.ndarray]]:
    model = units.edits["model"] if by_model else pd.Series("all", index=units.edits.index)
    keys = units.edits["task"].astype(str) + "\x1f" + model.astype(str)
    out = []
    for key in sorted(keys.unique()):
        task, mod = key.split("\x1f")
        edit_rows = np.flatnonzero((keys == key).to_numpy())
        out.append((task, mod, np.flatnonzero(np.isin(units.unit_edit, edit_rows))))
    return out


def _controls(units: PairedUnits, idx: np.ndarray) -> np.ndarray:
    e = units.unit_edit[idx]
    par = units.edits[list(CONTROL_COLS)].to_numpy(dtype=np.float64)[e]
    q = units.query_features[units.unit_query[idx]]
    return np.column_stack([par, units.y_parent[idx], q])


def _groups(units: PairedUnits, idx: np.ndarray) -> np.ndarray:
    g = units.unit_query[idx]
    return g if len(np.unique(g)) >= 2 else units.unit_edit[idx]


def _prompt_memberships(units: PairedUnits, idx: np.ndarray) -> list[np.ndarray]:
    e = units.edits.iloc[units.unit_edit[idx]]
    codes, ids = pd.factorize(np.concatenate([e["parent_id"].to_numpy(), e["child_id"].to_numpy()]), sort=True)
    par, chi = codes[: len(e)], codes[len(e):]
    return [(par == p) | (chi == p) for p in range(len(ids))]


def _support(units: PairedUnits, idx: np.ndarray, D_edit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column: distinct edits with a nonzero value, and distinct prompts that carry the feature
    (children of edits that add it, parents of edits that remove it)."""
    rows = np.unique(units.unit_edit[idx])
    D = D_edit[rows]
    child, parent = units.edits["child_id"].to_numpy()[rows], units.edits["parent_id"].to_numpy()[rows]
    carriers = [set(child[D[:, j] > 0]) | set(parent[D[:, j] < 0]) for j in range(D.shape[1])]
    return (D != 0).sum(0), np.array([len(c) for c in carriers])


def _fit_block(units: PairedUnits, idx: np.ndarray, D_edit: np.ndarray, names: list[str], cfg: EffectConfig,
               marginal: bool) -> pd.DataFrame:
    """Estimate the columns of ``D_edit`` (edit-level values) on the units ``idx`` of one cell."""
    n_edits, n_prompts = _support(units, idx, D_edit)
    usable = (n_edits >= cfg.min_edits) & (n_prompts >= cfg.min_prompts)
    res = pd.DataFrame({"feature": names, "n_edits": n_edits, "n_prompts": n_prompts,
                        "n_units": len(idx), "n_queries": len(np.unique(units.unit_query[idx]))})
    res["status"] = np.where(n_edits == 0, "no edits", np.where(
        usable, "aliased", np.where(n_edits < cfg.min_edits, "too few edits", "too few prompts")))
    for col in ("effect", "se_query", "se_jackknife", "jackknife_n"):
        res[col] = np.nan
    if not usable.any():
        return res
    cols = np.flatnonzero(usable)
    D = D_edit[units.unit_edit[idx]][:, cols].astype(np.float64)
    est = PairedEditDML(cfg.learner, cfg.cv, marginal=marginal, random_state=cfg.random_state)
    est.fit(units.dy[idx], D, _controls(units, idx), groups=_groups(units, idx), sample_weight=units.weight[idx],
            priority=np.argsort(-n_edits[cols], kind="stable"))
    res.loc[cols, "effect"], res.loc[cols, "se_query"] = est.coef_, est.stderr_
    res.loc[cols[est.identified_], "status"] = "estimated"
    res.loc[cols, "se_jackknife"] = est.jackknife_stderr(_prompt_memberships(units, idx))
    res.loc[cols, "jackknife_n"] = est.jackknife_n_
    return res


def _finish(table: pd.DataFrame, cfg: EffectConfig) -> pd.DataFrame:
    """Pick the reported se, add p-values, BH q-values, intervals and the significance flag."""
    effect, se_q = table["effect"].to_numpy(dtype=float), table["se_query"].to_numpy(dtype=float)
    jack = cfg.inference == "prompt_jackknife"
    se = np.fmax(se_q, table["se_jackknife"].to_numpy(dtype=float)) if jack else se_q
    # generalizing over prompts: as many independent pieces as prompts in the jackknife, so t(n - 1)
    df = table["jackknife_n"].to_numpy(dtype=float) - 1 if jack else np.full(len(table), np.inf)
    table["se"], table["df"] = se, df
    table["p_value"] = two_sided_p(effect, se, df)
    table["q_value"] = bh_qvalues(table["p_value"].to_numpy())
    table["q_value_query"] = bh_qvalues(two_sided_p(effect, se_q))
    z = quantile(0.95, df)
    table["ci_low"], table["ci_high"] = table["effect"] - z * se, table["effect"] + z * se
    table["significant"] = (table["q_value"] <= cfg.fdr).fillna(False).astype(bool)
    front = ["task", "model", "feature", "effect", "se", "ci_low", "ci_high", "p_value", "q_value", "significant"]
    return table[front + [c for c in table.columns if c not in front]].reset_index(drop=True)


#: Function words: a motif made only of these ("of the", "it") says nothing about the edit.
STOPWORDS: frozenset[str] = frozenset(
    "a an the of to in on at by for with and or but is are was were be been it its this that these those "
    "as from into than then so if we us our you your i me my they them their he she his her".split())


def _informative(gram: str) -> bool:
    return any(t not in STOPWORDS for t in gram.split())


def _motif_matrix(units: PairedUnits, idx: np.ndarray, cfg: EffectConfig) -> tuple[np.ndarray, list[str]]:
    """Signed n-gram matrix (edit-level): +1 inserted, -1 deleted; top-k by distinct edits, skipping
    grams made only of function words."""
    rows = np.unique(units.unit_edit[idx])
    counts: dict[str, int] = {}
    for r in rows:
        for m in units.motifs[r]:
            if _informative(m[2:]):
                counts[m[2:]] = counts.get(m[2:], 0) + 1
    grams = [g for g, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= cfg.motif_min_edits]
    grams = grams[: cfg.motif_top_k]
    col = {g: j for j, g in enumerate(grams)}
    M = np.zeros((len(units.edits), len(grams)))
    for r in rows:
        for m in units.motifs[r]:
            j = col.get(m[2:])
            if j is not None:
                M[r, j] += 1.0 if m[0] == "+" else -1.0
    return M, grams


def analyze_edits(units: PairedUnits, config: EffectConfig | None = None) -> EditReport:
    """Estimate edit effects per family x task (x model), with FDR control and heterogeneity tests.

    Parameters
    ----------
    units : PairedUnits
        From :func:`~cpo_engine.edits.pairs.units_from_triplets` or
        :func:`~cpo_engine.edits.pairs.units_from_trajectories`.
    config : EffectConfig, optional

    Returns
    -------
    EditReport
    """
    cfg = config or EffectConfig()
    fam_D = units.edits[list(FAM_COLS)].to_numpy(dtype=np.float64)
    surf = list(SURFACE_FEATURES)
    surf_D = units.edits[surf].to_numpy(dtype=np.float64) / np.array([SURFACE_SCALE[s] for s in surf])
    fam_t, surf_t, mot_t = [], [], []
    for task, model, idx in _cells(units, cfg.by_model):
        tag = {"task": task, "model": model}
        fam_t.append(_fit_block(units, idx, fam_D, list(FAMILIES), cfg, marginal=False).assign(**tag))
        surf_t.append(_fit_block(units, idx, surf_D, surf, cfg, marginal=False).assign(**tag))
        if cfg.motif_top_k > 0:
            M, grams = _motif_matrix(units, idx, cfg)
            if grams:
                mot_t.append(_fit_block(units, idx, M, grams, cfg, marginal=True).assign(**tag))
    families = _finish(pd.concat(fam_t, ignore_index=True), cfg).rename(columns={"feature": "family"})
    surface = _finish(pd.concat(surf_t, ignore_index=True), cfg)
    motifs = _finish(pd.concat(mot_t, ignore_index=True), cfg).rename(columns={"feature": "motif"}) if mot_t \
        else pd.DataFrame(columns=["task", "model", "motif", "effect", "se", "p_value", "q_value", "significant"])
    meta = {**{k: (v if isinstance(v, (int, float, str, bool)) else repr(v)) for k, v in asdict(cfg).items()},
            "n_edits": int(len(units.edits)), "n_units": int(units.n_units), "n_queries": int(len(units.query_ids))}
    return EditReport(families, surface, motifs, heterogeneity(families, cfg.fdr), meta)


def heterogeneity(families: pd.DataFrame, fdr: float = 0.05) -> pd.DataFrame:
    """Per family (and model): does its effect differ across tasks? Cochran's Q with BH over families.

    Tasks are treated as independent samples; tasks that share queries make the test anti-conservative.
    """
    rows = []
    for (fam, model), g in families[families["status"] == "estimated"].groupby(["family", "model"], sort=True):
        q = cochran_q(g["effect"].to_numpy(dtype=float), g["se"].to_numpy(dtype=float))
        rows.append({"family": fam, "model": model, "n_tasks": len(g), **q})
    out = pd.DataFrame(rows, columns=["family", "model", "n_tasks", "Q", "df", "p_value", "I2", "pooled", "pooled_se"])
    out["q_value"] = bh_qvalues(out["p_value"].to_numpy(dtype=float)) if len(out) else []
    out["heterogeneous"] = (out["q_value"] <= fdr).fillna(False).astype(bool) if len(out) else []
    return out


__all__ = ["CONTROL_COLS", "EditReport", "EffectConfig", "SURFACE_SCALE", "analyze_edits", "heterogeneity"]
