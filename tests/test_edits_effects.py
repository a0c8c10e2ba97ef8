"""Effect estimation on synthetic full grids with known family effects; FDR under the null."""

from __future__ import annotations

import numpy as np
import pytest

from cpo_engine.edits import EffectConfig, PairConfig, PairedEditDML, analyze_edits, bh_qvalues, cochran_q
from cpo_engine.edits import units_from_triplets
from cpo_engine.edits.simulate import simulate_grid
from cpo_engine.exceptions import NotFittedError


TRUE = {
    "math": {"step_by_step": 0.15, "persona": 0.0, "meta_instruction": -0.12},
    "logic": {"step_by_step": -0.10, "persona": 0.0, "meta_instruction": 0.0},
}


@pytest.fixture(scope="module")
def report():
    units = units_from_triplets(simulate_grid(TRUE, n_queries=200, seed=1))
    return analyze_edits(units, EffectConfig(cv=2, motif_top_k=40, motif_min_edits=2))


def _row(families, task, family):
    return families[(families["task"] == task) & (families["family"] == family)].iloc[0]


@pytest.mark.parametrize(("task", "family"), [(t, f) for t, eff in TRUE.items() for f, v in eff.items() if v])
def test_known_effects_recovered_with_right_sign(report, task: str, family: str) -> None:
    row = _row(report.families, task, family)
    truth = TRUE[task][family]
    assert row["status"] == "estimated"
    assert np.sign(row["effect"]) == np.sign(truth) and row["significant"]
    assert row["ci_low"] <= truth <= row["ci_high"]


def test_null_family_not_significant_and_absent_ones_reported(report) -> None:
    fam = report.families
    assert not _row(fam, "math", "persona")["significant"]
    assert set(fam.loc[fam["family"] == "complexity", "status"]) == {"no edits"}
    assert fam["q_value"].dropna().between(0, 1).all()


def test_heterogeneity_flags_the_family_whose_effect_flips(report) -> None:
    het = report.heterogeneity.set_index("family")
    assert het.loc["step_by_step", "heterogeneous"]
    assert het.loc["persona", "p_value"] > 0.01


def test_surface_and_motif_tables(report) -> None:
    assert set(report.surface["feature"]) == {"d_words", "d_sentences", "d_imperatives", "d_readability"}
    steps = report.motifs[(report.motifs["task"] == "math") & (report.motifs["motif"] == "step by step")]
    assert len(steps) == 1 and steps["effect"].iloc[0] > 0


@pytest.mark.parametrize(("inference", "prompt_sd"), [("query", 0.0), ("prompt_jackknife", 0.03)])
def test_fdr_held_under_the_null(inference: str, prompt_sd: float) -> None:
    """No family has an effect; with prompt_sd > 0 every prompt also has its own unexplained effect,
    which query-clustered intervals alone do not cover (the jackknife does)."""
    null = {t: dict.fromkeys(TRUE["math"], 0.0) for t in ("a", "b")}
    cfg = EffectConfig(cv=2, motif_top_k=0, inference=inference)
    fdp = []
    for rep in range(8):
        units = units_from_triplets(simulate_grid(null, n_queries=80, prompt_sd=prompt_sd, seed=100 + rep))
        fam = analyze_edits(units, cfg).families
        fdp.append(float(fam["significant"].any()))  # under the global null FDP = 1{any rejection}
    # nominal 0.05 (measured 0.013 with 200 replications, docs/edits.md): 2+ of 8 has p = 0.06 at the
    # nominal rate; these seeds give 0, and 2 (query) / 1 (jackknife) without BH
    assert sum(fdp) <= 1


def test_prompt_jackknife_inference_uses_t_quantiles_and_bh_over_the_table() -> None:
    """Reported se = the larger of the two; p-values and intervals from t with (prompts - 1) degrees of
    freedom (8 prompts here); q-values are BH over all estimated rows of the table (its documented family)."""
    from scipy import stats

    units = units_from_triplets(simulate_grid({"m": TRUE["math"], "l": TRUE["logic"]}, n_queries=100,
                                              prompt_sd=0.03, seed=3))
    fam = analyze_edits(units, EffectConfig(cv=2, motif_top_k=0, inference="prompt_jackknife")).families
    est = fam[fam["status"] == "estimated"]
    np.testing.assert_allclose(est["se"], np.maximum(est["se_query"], est["se_jackknife"]))
    assert (est["df"] == 7).all() and (est["jackknife_n"] == 8).all()
    z = est["effect"] / est["se"]
    np.testing.assert_allclose(est["p_value"], 2 * stats.t.sf(np.abs(z), 7), rtol=1e-10)
    np.testing.assert_allclose(est["ci_high"] - est["effect"], stats.t.ppf(0.975, 7) * est["se"], rtol=1e-10)
    np.testing.assert_allclose(est["q_value"], bh_qvalues(est["p_value"].to_numpy()), rtol=1e-12)
    assert (est["significant"] == (est["q_value"] <= 0.05)).all()
    query = analyze_edits(units, EffectConfig(cv=2, motif_top_k=0, inference="query")).families
    assert np.isinf(query.loc[query["status"] == "estimated", "df"]).all()


def test_lineage_pairs_only_use_parent_links() -> None:
    table = simulate_grid({"m": TRUE["math"]}, n_queries=60, seed=4)
    parent = ["p0" if p != "p0" else None for p in table.column("prompt_id").to_pylist()]
    units = units_from_triplets(table.append_column("parent_id", [parent]), PairConfig(pairs="auto"))
    assert set(units.edits["parent_id"]) == {"p0"} and len(units.edits) == 7


def test_aliased_families_get_no_estimate() -> None:
    rng = np.random.default_rng(0)
    d = rng.choice([-1.0, 0.0, 1.0], size=(400, 1))
    D = np.hstack([d, d])  # two families always edited together
    est = PairedEditDML(cv=2).fit(d[:, 0] * 0.2 + rng.normal(0, 0.1, 400), D, rng.normal(size=(400, 2)),
                                  groups=np.arange(400) // 4)
    assert est.identified_.tolist() == [True, False] and np.isnan(est.coef_[1])
    assert abs(est.coef_[0] - 0.2) < 0.05


def test_unfitted_estimator_says_call_fit() -> None:
    with pytest.raises(NotFittedError, match="call fit"):
        PairedEditDML().jackknife_stderr([])


def test_bh_and_cochran_q_by_hand() -> None:
    q = bh_qvalues(np.array([0.01, 0.04, 0.03, np.nan, 0.5]))
    np.testing.assert_allclose(q[[0, 1, 2, 4]], [0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.5])
    assert np.isnan(q[3])
    same = cochran_q(np.array([0.1, 0.1, 0.1]), np.array([0.02, 0.02, 0.02]))
    assert same["Q"] == 0 and same["p_value"] == 1.0 and abs(same["pooled"] - 0.1) < 1e-12
    assert cochran_q(np.array([0.2, -0.2]), np.array([0.05, 0.05]))["p_value"] < 1e-3


def test_cells_split_by_model_and_heterogeneity_is_per_model() -> None:
    import pyarrow as pa

    parts = []
    for model, eff in (("m1", 0.15), ("m2", -0.15)):
        t = simulate_grid({"a": {"step_by_step": eff, "persona": 0.0}, "b": {"step_by_step": eff, "persona": 0.0}},
                          n_queries=80, seed=7)
        t = t.append_column("model", pa.array([model] * t.num_rows))
        parts.append(t.append_column("run_id", pa.array([model] * t.num_rows)))  # validator keys on run_id
    rep = analyze_edits(units_from_triplets(pa.concat_tables(parts)), EffectConfig(cv=2, motif_top_k=0))
    fam = rep.families.set_index(["task", "model", "family"])
    assert fam.loc[("a", "m1", "step_by_step"), "effect"] > 0 > fam.loc[("a", "m2", "step_by_step"), "effect"]
    assert set(rep.heterogeneity["model"]) == {"m1", "m2"}


def test_logged_subsample_with_propensities_recovers_the_effect() -> None:
    """Rows logged with a known, query- and prompt-dependent probability (stored as `propensity`):
    only edits whose two prompts were both logged on a query form units, weighted by 1/(p_parent p_child)."""
    import pyarrow as pa

    table = simulate_grid({"m": TRUE["math"]}, n_queries=300, seed=11)
    rng = np.random.default_rng(0)
    has_steps = np.array(["step by step" in t for t in table.column("prompt_text").to_pylist()])
    hard = np.array([int(q.split("q")[-1]) % 2 == 0 for q in table.column("query_id").to_pylist()])
    prop = np.where(has_steps & hard, 0.8, 0.4)
    keep = rng.random(len(prop)) < prop
    logged = table.filter(pa.array(keep)).append_column("propensity", pa.array(prop[keep]))
    units = units_from_triplets(logged)
    assert units.n_units < 0.5 * 300 * 56 and units.weight.min() > 1.0
    row = _row(analyze_edits(units, EffectConfig(cv=2, motif_top_k=0)).families, "m", "step_by_step")
    assert row["ci_low"] <= 0.15 <= row["ci_high"] and row["effect"] > 0
